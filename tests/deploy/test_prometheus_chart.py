"""The chart's metrics path, as rendered: Prometheus and what it scrapes, Jaeger's Monitor tab
reading it, the collector's span metrics before tail sampling with bounded labels, the
services' sampling and exemplar settings, and the alert rules (the plain file is the chart's
rendering). Debian's real Prometheus checks the same renders in test_prometheus_server.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.deploy.deploy_support import CHART, REPO_ROOT, SERVICES, Render, template_args, values_args
from tests.deploy.test_network_policy import allowed_flows

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable

    Helm = Callable[..., subprocess.CompletedProcess[str]]

pytestmark = pytest.mark.deploy

ALERTS_FILE = CHART / "files" / "prometheus" / "alerts.yml"
ALERT_NAMES = {
    "LanternDeadLetters",
    "LanternOutboxStalled",
    "LanternErrorRatioHigh",
    "LanternQueueWithoutConsumer",
}
# Resource attributes that name one process or one pod object: a new series on every restart.
PER_PROCESS = {"service.instance.id", "k8s.pod.uid", "k8s.pod.ip", "host.name", "process.pid", "container.id"}


def render_with(helm: Helm, mode: str, *overrides: str) -> Render:
    args = [*values_args(mode), *(a for o in overrides for a in ("--set", o))]
    objects = [o for o in yaml.safe_load_all(helm(*template_args(*args)).stdout) if o]
    return Render(mode, objects, {})


def prometheus_config(render: Render) -> dict[str, Any]:
    text = render.get("ConfigMap", "prometheus-config")["data"]["prometheus.yml"]
    config: dict[str, Any] = yaml.safe_load(text)
    return config


def collector_config(render: Render) -> dict[str, Any]:
    text = render.get("ConfigMap", "otel-collector-config")["data"]["collector.yaml"]
    config: dict[str, Any] = yaml.safe_load(text)
    return config


def jaeger_config(render: Render) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(render.get("ConfigMap", "jaeger-config")["data"]["config.yaml"])
    return config


def container_env(workload: dict[str, Any]) -> dict[str, str]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(quantity)


def test_kind_runs_the_pinned_official_prometheus_with_exemplars_and_bounded_storage(
    renders: dict[str, Render],
) -> None:
    render = renders["kind"]
    values = render.values["prometheus"]
    statefulset = render.get("StatefulSet", "prometheus")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    repository, tag = container["image"].rsplit(":", 1)
    assert repository == "prom/prometheus"
    assert tag.startswith("v3.") and tag.count(".") == 2, tag
    args = container["args"]
    assert "--enable-feature=exemplar-storage" in args
    assert f"--storage.tsdb.retention.time={values['retention']['time']}" in args
    assert f"--storage.tsdb.retention.size={values['retention']['size']}" in args
    assert "--config.file=/etc/prometheus/prometheus.yml" in args
    # Memory and disk both have a ceiling: a limit, and retention by size inside the volume.
    assert _bytes(container["resources"]["limits"]["memory"]) <= 2 * 2**30
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    volume = _bytes(claim["spec"]["resources"]["requests"]["storage"])
    assert _bytes(values["retention"]["size"]) <= 0.8 * volume
    assert prometheus_config(render)["storage"]["exemplars"]["max_exemplars"] == values["maxExemplars"]
    # Config and rules come from the chart's ConfigMaps; a change to either rolls the pod.
    sources = statefulset["spec"]["template"]["spec"]["volumes"]
    projected = next(v for v in sources if v["name"] == "config")["projected"]["sources"]
    assert [s["configMap"]["name"] for s in projected] == ["prometheus-config", "prometheus-rules"]
    assert {"checksum/config", "checksum/rules"} <= statefulset["spec"]["template"]["metadata"][
        "annotations"
    ].keys()


def test_prometheus_scrapes_the_collector_with_openmetrics_and_rabbitmq_per_queue(
    renders: dict[str, Render],
) -> None:
    config = prometheus_config(renders["kind"])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"otel-collector", "rabbitmq", "prometheus"}
    collector = jobs["otel-collector"]
    assert collector["static_configs"] == [{"targets": ["otel-collector:8889"]}]
    # Only OpenMetrics carries exemplars in text; it is asked for first.
    assert collector["scrape_protocols"][0] == "OpenMetricsText1.0.0"
    assert collector["honor_labels"] is True
    rabbitmq = jobs["rabbitmq"]
    assert rabbitmq["static_configs"] == [{"targets": ["rabbitmq:15692"]}]
    assert rabbitmq["metrics_path"] == "/metrics/detailed"
    assert set(rabbitmq["params"]["family"]) == {"queue_coarse_metrics", "queue_consumer_count"}
    assert all(job["sample_limit"] > 0 for name, job in jobs.items() if name != "prometheus")
    assert config["rule_files"] == ["alerts.yml"]
    assert "alerts.yml" in renders["kind"].get("ConfigMap", "prometheus-rules")["data"]


def test_rabbitmq_serves_its_prometheus_endpoint(renders: dict[str, Render]) -> None:
    render = renders["kind"]
    plugins = render.get("ConfigMap", "rabbitmq-config")["data"]["enabled_plugins"].strip()
    assert plugins.startswith("[") and plugins.endswith("].")
    assert {"rabbitmq_prometheus", "rabbitmq_management"} <= set(plugins[1:-2].split(","))
    (container,) = render.get("StatefulSet", "rabbitmq")["spec"]["template"]["spec"]["containers"]
    assert {"name": "prometheus", "containerPort": 15692, "protocol": "TCP"} in container["ports"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/rabbitmq/enabled_plugins")
    assert mount["subPath"] == "enabled_plugins"
    service_ports = {p["name"]: p["port"] for p in render.get("Service", "rabbitmq")["spec"]["ports"]}
    assert service_ports["prometheus"] == 15692


def test_prometheus_network_flows_are_exactly_the_scrapes_and_jaegers_queries(
    renders: dict[str, Render],
) -> None:
    flows = allowed_flows(renders["kind"])
    assert {f for f in flows if f[0] == "prometheus" and f[1] != "dns"} == {
        ("prometheus", "otel-collector", 8889, "TCP"),
        ("prometheus", "rabbitmq", 15692, "TCP"),
    }
    assert {f for f in flows if f[1] == "prometheus"} == {("jaeger", "prometheus", 9090, "TCP")}
    # Nothing else reaches the exporter or RabbitMQ's metrics port.
    assert {f[0] for f in flows if f[1:3] == ("otel-collector", 8889)} == {"prometheus"}
    assert {f[0] for f in flows if f[1:3] == ("rabbitmq", 15692)} == {"prometheus"}


def test_a_clusters_own_prometheus_namespace_may_scrape_both_endpoints(helm: Helm) -> None:
    render = render_with(
        helm, "kind", "prometheus.enabled=false", "networkPolicy.metricsScraperNamespace=monitoring"
    )
    assert not render.of_kind("StatefulSet") or all(
        s["metadata"]["name"] != "prometheus" for s in render.of_kind("StatefulSet")
    )
    flows = allowed_flows(render)
    assert ("ns:monitoring", "otel-collector", 8889, "TCP") in flows
    assert ("ns:monitoring", "rabbitmq", 15692, "TCP") in flows
    assert not [f for f in flows if "prometheus" in f[:2]]
    # No Prometheus and no URL: Jaeger has no metrics backend, rather than a dangling one.
    config = jaeger_config(render)
    assert "metrics" not in config["extensions"]["jaeger_query"]["storage"]
    assert "metric_backends" not in config["extensions"]["jaeger_storage"]


def test_jaeger_reads_span_metrics_from_prometheus_as_the_collector_names_them(
    renders: dict[str, Render],
) -> None:
    collector = collector_config(renders["kind"])
    span_metrics = collector["connectors"]["span_metrics"]
    for mode, url in (
        ("kind", "http://prometheus:9090"),
        ("staging", renders["staging"].values["jaeger"]["monitor"]["prometheusUrl"]),
    ):
        config = jaeger_config(renders[mode])
        backend_name = config["extensions"]["jaeger_query"]["storage"]["metrics"]
        prometheus = config["extensions"]["jaeger_storage"]["metric_backends"][backend_name]["prometheus"]
        assert prometheus["endpoint"] == url, mode
        # The prometheus exporter turns the connector's dotted namespace into underscores and
        # adds _total and the unit; Jaeger must build the same names.
        assert prometheus["metric_namespace"] == span_metrics["namespace"].replace(".", "_")
        assert prometheus["latency_unit"] == span_metrics["histogram"]["unit"] == "ms"
        assert prometheus["normalize_calls"] is True
        assert prometheus["normalize_duration"] is True
    assert collector["exporters"]["prometheus"].get("add_metric_suffixes", True) is True


def test_staging_offers_a_service_monitor_and_the_rules_to_its_prometheus_operator(
    renders: dict[str, Render],
) -> None:
    render = renders["staging"]
    assert not [s for s in render.of_kind("StatefulSet") if s["metadata"]["name"] == "prometheus"]
    monitor = render.get("ServiceMonitor", "otel-collector")
    service = render.get("Service", "otel-collector")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    assert port["port"] == 8889
    assert endpoint["scrapeProtocols"][0] == "OpenMetricsText1.0.0"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rule = render.get("PrometheusRule", "lantern-alerts")
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS_FILE.read_text())["groups"]


def test_with_its_own_rabbitmq_the_service_monitor_scrapes_the_per_queue_endpoint(helm: Helm) -> None:
    render = render_with(helm, "kind", "prometheus.enabled=false", "prometheus.serviceMonitor.enabled=true")
    monitor = render.get("ServiceMonitor", "rabbitmq")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "prometheus"
    assert endpoint["path"] == "/metrics/detailed"
    assert set(endpoint["params"]["family"]) == {"queue_coarse_metrics", "queue_consumer_count"}


def test_the_alerts_file_is_the_charts_rendering_with_default_values(renders: dict[str, Render]) -> None:
    rendered = renders["default"].get("ConfigMap", "prometheus-rules")["data"]["alerts.yml"]
    assert rendered.strip() == ALERTS_FILE.read_text().strip(), (
        "charts/lantern/files/prometheus/alerts.yml differs from define lantern.prometheusAlerts "
        "rendered with the default values: edit both, or write the rendering into the file"
    )
    rules = [r for g in yaml.safe_load(rendered)["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == ALERT_NAMES


def test_alert_thresholds_come_from_values(helm: Helm) -> None:
    render = render_with(
        helm,
        "default",
        "prometheus.alerts.outboxOldestAgeSeconds=300",
        "prometheus.alerts.errorRatio=0.2",
        "prometheus.alerts.errorRatioFor=10m",
        "prometheus.alerts.queueWithoutConsumerFor=7m",
    )
    text = render.get("ConfigMap", "prometheus-rules")["data"]["alerts.yml"]
    rules = {r["alert"]: r for g in yaml.safe_load(text)["groups"] for r in g["rules"]}
    assert rules["LanternOutboxStalled"]["expr"].strip().endswith("> 300")
    assert rules["LanternErrorRatioHigh"]["expr"].strip().endswith("> 0.2")
    assert rules["LanternErrorRatioHigh"]["for"] == "10m"
    assert rules["LanternQueueWithoutConsumer"]["for"] == "7m"


def test_span_metrics_see_every_span_before_tail_sampling(renders: dict[str, Render]) -> None:
    pipelines = collector_config(renders["kind"])["service"]["pipelines"]
    traces = {name: p for name, p in pipelines.items() if name.split("/")[0] == "traces"}
    (entry,) = [p for p in traces.values() if "otlp" in p["receivers"]]
    assert "span_metrics" in entry["exporters"]
    assert "tail_sampling" not in entry["processors"]
    (forward,) = [e for e in entry["exporters"] if e.split("/")[0] == "forward"]
    (sampled,) = [p for p in traces.values() if forward in p["receivers"]]
    assert "tail_sampling" in sampled["processors"]
    # Jaeger gets sampled traces only, from that one pipeline.
    assert [p for p in traces.values() if "otlp_grpc/jaeger" in p["exporters"]] == [sampled]


@pytest.mark.parametrize("mode", ["default", "kind", "staging"])
def test_tail_sampling_keeps_errors_slow_traces_and_a_share_of_the_rest(
    renders: dict[str, Render], mode: str
) -> None:
    render = renders[mode]
    policies = {p["type"]: p for p in collector_config(render)["processors"]["tail_sampling"]["policies"]}
    assert set(policies) == {"status_code", "latency", "probabilistic"}
    assert policies["status_code"]["status_code"]["status_codes"] == ["ERROR"]
    env = container_env(render.get("Deployment", "otel-collector"))
    expected = render.values["otelCollector"]["tailSampling"]
    assert policies["latency"]["latency"]["threshold_ms"] == "${env:TAIL_SAMPLING_LATENCY_THRESHOLD_MS}"
    assert env["TAIL_SAMPLING_LATENCY_THRESHOLD_MS"] == str(expected["latencyThresholdMs"])
    share = policies["probabilistic"]["probabilistic"]["sampling_percentage"]
    assert share == "${env:TAIL_SAMPLING_KEEP_PERCENTAGE}"
    assert float(env["TAIL_SAMPLING_KEEP_PERCENTAGE"]) == expected["keepPercentage"]
    assert env["TAIL_SAMPLING_DECISION_WAIT"] == expected["decisionWait"]
    assert int(env["TAIL_SAMPLING_NUM_TRACES"]) == expected["numTraces"]
    assert float(renders["kind"].values["otelCollector"]["tailSampling"]["keepPercentage"]) == 100


def test_tail_sampling_thresholds_follow_values(helm: Helm) -> None:
    render = render_with(
        helm,
        "default",
        "otelCollector.tailSampling.latencyThresholdMs=2500",
        "otelCollector.tailSampling.keepPercentage=2.5",
    )
    env = container_env(render.get("Deployment", "otel-collector"))
    assert env["TAIL_SAMPLING_LATENCY_THRESHOLD_MS"] == "2500"
    assert env["TAIL_SAMPLING_KEEP_PERCENTAGE"] == "2.5"


def test_the_collector_stays_one_replica_for_tail_sampling(renders: dict[str, Render], helm: Helm) -> None:
    for render in renders.values():
        assert render.get("Deployment", "otel-collector")["spec"]["replicas"] == 1
        assert not [
            h
            for h in render.of_kind("HorizontalPodAutoscaler")
            if h["spec"]["scaleTargetRef"]["name"] == "otel-collector"
        ]
    refused = helm(*template_args("--set", "otelCollector.replicas=2"), check=False)
    assert refused.returncode != 0
    assert "additional properties 'replicas' not allowed" in refused.stderr


def _kept_resource_attributes(config: dict[str, Any], processors: list[str]) -> set[str] | None:
    """What the pipeline's keep_keys statements let through, or None when nothing trims."""
    for name in processors:
        if name.split("/")[0] != "transform":
            continue
        for group in config["processors"][name]["metric_statements"]:
            if group.get("context") != "resource":
                continue
            for statement in group["statements"]:
                if statement.startswith("keep_keys(attributes, "):
                    kept: list[str] = yaml.safe_load(statement[len("keep_keys(attributes, ") : -1])
                    return set(kept)
    return None


def test_resource_attributes_reach_series_only_through_an_explicit_bounded_list(
    renders: dict[str, Render],
) -> None:
    config = collector_config(renders["kind"])
    exporter = config["exporters"]["prometheus"]
    assert exporter["enable_open_metrics"] is True
    pipelines = config["service"]["pipelines"]
    to_prometheus = {name: p for name, p in pipelines.items() if "prometheus" in p["exporters"]}
    assert set(to_prometheus) == {"metrics", "metrics/spans"}
    for name, pipeline in to_prometheus.items():
        kept = _kept_resource_attributes(config, pipeline["processors"])
        if exporter["resource_to_telemetry_conversion"]["enabled"]:
            assert kept is not None, f"{name}: every resource attribute would become a label"
            assert not kept & PER_PROCESS, f"{name}: {kept & PER_PROCESS}"
    # Span metrics are summed over the pods of a service: no pod label at all.
    spans = _kept_resource_attributes(config, to_prometheus["metrics/spans"]["processors"])
    assert spans is not None
    assert "k8s.pod.name" not in spans
    span_metrics = config["connectors"]["span_metrics"]
    assert set(span_metrics["resource_metrics_key_attributes"]) <= spans
    # The Monitor tab uses service, operation, kind and status, which the connector always
    # adds; any further dimension is one it sums away.
    assert span_metrics["dimensions"] == []


def test_services_sample_parent_based_at_the_ratio_of_values_and_keep_trace_based_exemplars(
    renders: dict[str, Render], helm: Helm
) -> None:
    for render in renders.values():
        ratio = render.values["shared"]["otel"]["tracesSamplerRatio"]
        for name in SERVICES:
            config = render.get("ConfigMap", f"{name}-config")["data"]
            assert config["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio", f"{render.mode}: {name}"
            assert float(config["OTEL_TRACES_SAMPLER_ARG"]) == ratio, f"{render.mode}: {name}"
            assert config["OTEL_METRICS_EXEMPLAR_FILTER"] == "trace_based", f"{render.mode}: {name}"
    assert float(renders["kind"].values["shared"]["otel"]["tracesSamplerRatio"]) == 1.0
    lowered = render_with(helm, "default", "shared.otel.tracesSamplerRatio=0.25")
    assert lowered.get("ConfigMap", "orders-config")["data"]["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
    refused = helm(*template_args("--set", "shared.otel.tracesSamplerRatio=2"), check=False)
    assert refused.returncode != 0


def test_collector_config_in_the_chart_is_the_repository_file(renders: dict[str, Render]) -> None:
    text = renders["kind"].get("ConfigMap", "otel-collector-config")["data"]["collector.yaml"]
    assert yaml.safe_load(text) == yaml.safe_load((REPO_ROOT / "otel" / "collector.yaml").read_text())
