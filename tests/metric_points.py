"""What an SDK metric reader holds, as the attribute sets of one instrument's data points."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader


def point_attributes(reader: InMemoryMetricReader, name: str) -> list[dict[str, Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        dict(point.attributes or {})
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


PointTotals = dict[frozenset[tuple[str, Any]], float]


def point_totals(reader: InMemoryMetricReader, name: str) -> PointTotals:
    """Each attribute set's count (a histogram's) or value (a counter's) so far: a reader shared
    by a process's tests is compared before and after a test's own work (nothing recorded yet:
    none)."""
    data = reader.get_metrics_data()
    if data is None:
        return {}
    return {
        frozenset((point.attributes or {}).items()): getattr(point, "count", None) or point.value
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    }
