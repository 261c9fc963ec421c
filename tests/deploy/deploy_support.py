"""Paths, deployment modes and the rendered-chart type shared by the deploy checks."""

from __future__ import annotations

import functools
import http.client
import json
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "lantern"
NAMESPACE = "lantern"
RELEASE = "lantern"

# Where the deploy checks keep what they fetch; the same directory scripts/k8s-tools.sh uses.
CACHE_DIR = Path(os.environ.get("LANTERN_CACHE") or Path.home() / ".cache" / "lantern")
SKAFFOLD_SCHEMA_NAME = "skaffold-v4beta14.json"
SKAFFOLD_SCHEMA_URL = "https://raw.githubusercontent.com/GoogleContainerTools/skaffold/main/docs-v2/content/en/schemas/v4beta14.json"


def chart_components() -> dict[str, dict[str, Any]]:
    """The chart's `components:` map, the one list of services (devstack reads it too)."""
    components: dict[str, dict[str, Any]] = yaml.safe_load((CHART / "values.yaml").read_text())["components"]
    return components


# Every service of the chart with its port; a component added to values.yaml is checked too.
SERVICES = {name: int(c["port"]) for name, c in chart_components().items()}
WITH_DATABASE = tuple(name for name, c in chart_components().items() if c["database"])
WITH_BROKER = tuple(name for name, c in chart_components().items() if c["amqp"])

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


# What a cluster with the Gateway API CRDs reports; the chart refuses to install without them.
GATEWAY_API_VERSIONS = (
    "--api-versions",
    "gateway.networking.k8s.io/v1/Gateway,gateway.networking.k8s.io/v1/HTTPRoute",
)


def template_args(*extra: str, gateway_api: bool = True) -> list[str]:
    """`helm template` of the chart, as if against a cluster that serves the Gateway API
    unless gateway_api is False."""
    served = GATEWAY_API_VERSIONS if gateway_api else ()
    return ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, *served, *extra]


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


def _is_skaffold_schema(path: Path) -> bool:
    try:
        schema = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(schema, dict) and "SkaffoldConfig" in schema.get("definitions", {})


@functools.cache
def skaffold_schema() -> Path:
    """The skaffold v4beta14 JSON schema, from the first of: $LANTERN_SKAFFOLD_SCHEMA (a
    path), the cache, a download into the cache (one try, short timeout), a checkout of
    ../shared/schemas beside the repository. Without any, the test that needs it skips
    with the reason: a fresh clone on a machine without network never fails for lack of it."""
    tried = []
    override = os.environ.get("LANTERN_SKAFFOLD_SCHEMA")
    if override:
        if _is_skaffold_schema(Path(override)):
            return Path(override)
        tried.append(f"LANTERN_SKAFFOLD_SCHEMA={override} is not a skaffold schema file")
    cached = CACHE_DIR / "schemas" / SKAFFOLD_SCHEMA_NAME
    if _is_skaffold_schema(cached):
        return cached
    try:
        with urllib.request.urlopen(SKAFFOLD_SCHEMA_URL, timeout=5) as response:
            body = response.read()
        cached.parent.mkdir(parents=True, exist_ok=True)
        # Written under a temporary name, then renamed: a parallel run never reads half a file.
        with tempfile.NamedTemporaryFile(dir=cached.parent, delete=False, suffix=".part") as part:
            part.write(body)
        if _is_skaffold_schema(Path(part.name)):
            Path(part.name).replace(cached)
            return cached
        Path(part.name).unlink()
        tried.append(f"{SKAFFOLD_SCHEMA_URL} did not answer with a skaffold schema")
    except (OSError, http.client.HTTPException) as error:
        tried.append(f"downloading {SKAFFOLD_SCHEMA_URL} failed ({error})")
    beside = REPO_ROOT.parent / "shared" / "schemas" / SKAFFOLD_SCHEMA_NAME
    if _is_skaffold_schema(beside):
        return beside
    tried.append(f"no {beside}")
    pytest.skip(
        f"no skaffold v4beta14 schema: {'; '.join(tried)}. Set LANTERN_SKAFFOLD_SCHEMA to a copy, "
        f"or put one at {cached}"
    )
