"""Paths, deployment modes and the rendered-chart type shared by the deploy checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "lantern"
NAMESPACE = "lantern"
RELEASE = "lantern"

# Deployment modes: no values file (chart defaults), kind, staging.
VALUES_FILES: dict[str, Path | None] = {
    "default": None,
    "kind": CHART / "ci" / "kind-values.yaml",
    "staging": CHART / "ci" / "staging-values.yaml",
}


@dataclass(frozen=True)
class Render:
    """One `helm template` of the chart: the objects and the merged values."""

    mode: str
    objects: list[dict[str, Any]]
    values: dict[str, Any]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        for o in self.objects:
            if o["kind"] == kind and o["metadata"]["name"] == name:
                return o
        raise AssertionError(f"{self.mode}: no {kind} named {name!r} in the render")


def template_args(*extra: str) -> list[str]:
    return ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, *extra]


def values_args(mode: str) -> list[str]:
    path = VALUES_FILES[mode]
    return ["--values", str(path)] if path else []


def merged_values(mode: str) -> dict[str, Any]:
    """Chart defaults with the mode's values file merged over them, as helm does."""

    def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
        return out

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    path = VALUES_FILES[mode]
    return merge(values, yaml.safe_load(path.read_text())) if path else values
