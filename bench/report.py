"""Medians, ratios and targets of a benchmark, printed as a table and kept as JSON."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool


# The latency percentiles that the HTTP and end-to-end benchmarks both report.
LATENCY_METRICS = (Metric("p50_ms", "p50", "ms", False), Metric("p99_ms", "p99", "ms", False))


@dataclass(frozen=True)
class Target:
    """`variant`'s `metric` divided by `baseline`'s must be at least (or at most) `bound`; with
    no bound, the ratio is only reported.

    The ratio is the median of the rounds' own ratios: each compares two samples taken minutes
    apart in one round, so a machine that drifts over the run (a shared VM does) moves it less
    than a ratio of medians, whose two medians may come from different rounds.
    """

    description: str
    metric: str
    variant: str
    baseline: str
    bound: float | None = None
    at_most: bool = False

    def round_ratios(self, samples: dict[str, list[dict[str, float]]]) -> list[float]:
        """The ratio in each round; empty unless both variants have a sample in every round."""
        ours, theirs = samples.get(self.variant, []), samples.get(self.baseline, [])
        if len(ours) != len(theirs):
            return []
        try:
            return [a[self.metric] / b[self.metric] for a, b in zip(ours, theirs, strict=True)]
        except (KeyError, ZeroDivisionError):
            return []

    def check(self, samples: dict[str, list[dict[str, float]]]) -> tuple[float | None, bool]:
        ratios = self.round_ratios(samples)
        if not ratios:
            return None, False
        ratio = statistics.median(ratios)
        if self.bound is None:
            return ratio, True
        return ratio, (ratio <= self.bound if self.at_most else ratio >= self.bound)


@dataclass
class Benchmark:
    """The samples of every variant, one per round, and what they are compared against."""

    name: str
    title: str
    metrics: list[Metric]
    baseline: str
    variants: list[str]
    notes: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    samples: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    def add(self, variant: str, sample: dict[str, float]) -> None:
        self.samples.setdefault(variant, []).append(sample)

    def medians(self) -> dict[str, dict[str, float]]:
        return {
            variant: {
                metric.key: statistics.median(s[metric.key] for s in samples)
                for metric in self.metrics
                if all(metric.key in s for s in samples)
            }
            for variant, samples in self.samples.items()
            if samples
        }

    def table(self) -> str:
        medians = self.medians()
        rounds = max((len(s) for s in self.samples.values()), default=0)
        header = ["variant"]
        for metric in self.metrics:
            header += (
                [f"{metric.label} ({metric.unit})", "ratio"]
                if self.baseline
                else [f"{metric.label} ({metric.unit})"]
            )
        rows = [header]
        for variant in self.variants:
            if variant not in medians:
                continue
            row = [variant]
            for metric in self.metrics:
                value = medians[variant].get(metric.key)
                base = medians.get(self.baseline, {}).get(metric.key)
                row.append("-" if value is None else _number(value))
                if self.baseline:
                    row.append("-" if value is None or not base else f"{value / base:.2f}x")
            rows.append(row)
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        compared = f"; ratio = variant / {self.baseline}" if self.baseline else ""
        lines = [f"## {self.title}  (median of {rounds} round{'s' if rounds > 1 else ''}{compared})"]
        for n, row in enumerate(rows):
            lines.append(
                "| "
                + " | ".join(
                    cell.ljust(w) if i == 0 else cell.rjust(w)
                    for i, (cell, w) in enumerate(zip(row, widths, strict=True))
                )
                + " |"
            )
            if n == 0:
                lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for target in self.targets:
            ratio, met = target.check(self.samples)
            shown = "n/a" if ratio is None else f"{ratio:.2f}x"
            rounds_shown = ", ".join(f"{r:.2f}" for r in target.round_ratios(self.samples))
            if target.bound is None:
                spread = f" (rounds {rounds_shown})" if rounds_shown else ""
                lines.append(f"ratio: {target.description}: {shown}{spread}")
                continue
            spread = f"rounds {rounds_shown}; " if rounds_shown else ""
            sign = "<=" if target.at_most else ">="
            verdict = "MET" if met else "NOT MET"
            lines.append(
                f"target: {target.description}: {shown} ({spread}needs {sign} {target.bound}x) {verdict}"
            )
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        medians = self.medians()
        return {
            "title": self.title,
            "baseline": self.baseline,
            "metrics": [vars(m) for m in self.metrics],
            "medians": medians,
            "samples": self.samples,
            "notes": self.notes,
            "targets": [
                {
                    **vars(t),
                    "ratio": ratio,
                    "round_ratios": t.round_ratios(self.samples),
                    "met": met if t.bound is not None else None,
                }
                for t in self.targets
                for ratio, met in [t.check(self.samples)]
            ],
        }


def progress(sample: dict[str, float], **units: str) -> str:
    """One sample as `value unit` pairs, for the lines printed while a benchmark runs."""
    return "  ".join(f"{sample[key]:8.1f} {unit}" for key, unit in units.items())


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def write_results(benchmarks: list[Benchmark], command: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC)
    document = {
        "command": command,
        "finished_at": stamp.isoformat(timespec="seconds"),
        "commit": _commit(),
        "machine": {"python": platform.python_version(), "cpus": _cpus(), "platform": platform.platform()},
        "benchmarks": {b.name: b.as_json() for b in benchmarks},
    }
    text = json.dumps(document, indent=2)
    (RESULTS_DIR / f"{stamp:%Y%m%dT%H%M%SZ}.json").write_text(text)
    latest = RESULTS_DIR / "latest.json"
    latest.write_text(text)
    return latest


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - git from PATH, as make does
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
