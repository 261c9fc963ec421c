{{- /*
Prometheus's configuration and alert rules. Both load in Prometheus 3 (the chart's image)
and 2.53 (Debian's, which the tests run): no flag or field only one of them knows.
*/ -}}

{{- /* Where Jaeger reads span metrics: the value, else the chart's Prometheus, else "". */ -}}
{{- define "lantern.jaegerMetricsUrl" -}}
{{- if .Values.jaeger.monitor.prometheusUrl -}}
{{ .Values.jaeger.monitor.prometheusUrl }}
{{- else if .Values.prometheus.enabled -}}
http://prometheus:9090
{{- end -}}
{{- end }}

{{- /*
The two scrape jobs. The collector's exporter speaks OpenMetrics, the only text format that
carries exemplars, so it is asked for first. honor_labels: the exporter's job label is the
service (service.name), kept instead of renamed exported_job. RabbitMQ's detailed endpoint
gives per-queue depth (ready, unacked) and consumers, and only those families.
*/ -}}
{{- define "lantern.prometheusConfig" -}}
{{- $p := .Values.prometheus -}}
global:
  scrape_interval: {{ $p.scrapeInterval }}
  evaluation_interval: {{ $p.scrapeInterval }}
rule_files:
  - alerts.yml
{{- with $p.alerting.alertmanagers }}
alerting:
  alertmanagers:
    - static_configs:
        - targets: {{ toJson . }}
{{- end }}
storage:
  exemplars:
    max_exemplars: {{ int64 $p.maxExemplars }}
scrape_configs:
  {{- if .Values.otelCollector.enabled }}
  - job_name: otel-collector
    honor_labels: true
    scrape_protocols: [OpenMetricsText1.0.0, OpenMetricsText0.0.1, PrometheusText0.0.4]
    sample_limit: {{ int64 $p.sampleLimit }}
    static_configs:
      - targets: ["otel-collector:8889"]
  {{- end }}
  {{- if .Values.rabbitmq.enabled }}
  - job_name: rabbitmq
    metrics_path: /metrics/detailed
    params:
      family: [queue_coarse_metrics, queue_consumer_count]
    sample_limit: {{ int64 $p.sampleLimit }}
    static_configs:
      - targets: ["rabbitmq:15692"]
  {{- end }}
  - job_name: prometheus
    static_configs:
      - targets: ["localhost:9090"]
{{- end }}

{{- /*
The alert rules. files/prometheus/alerts.yml is this, rendered with the default values, so
tools without Helm (promtool, vmalert) load the same rules; a test keeps the two equal.
*/ -}}
{{- define "lantern.prometheusAlerts" -}}
{{- $a := .Values.prometheus.alerts -}}
# Lantern's alert rules, as the chart renders them with its default values
# (charts/lantern/templates/_prometheus.tpl, define "lantern.prometheusAlerts"; thresholds
# under prometheus.alerts in values.yaml). A plain Prometheus rule file: promtool and
# vmalert load it as it is. tests/deploy/test_prometheus_chart.py fails when it differs
# from the chart's rendering.
groups:
  - name: lantern-messaging
    rules:
      # RabbitMQ's rabbitmq_prometheus endpoint, /metrics/detailed (family queue_coarse_metrics).
      - alert: LanternDeadLetters
        expr: |
          max by (vhost, queue) (rabbitmq_detailed_queue_messages{queue=~".+\\.dead"}) > 0
        labels:
          severity: warning
        annotations:
          summary: {{ `"{{ $value }} dead-lettered message(s) in {{ $labels.queue }}"` }}
          description: "List and replay them: python -m lantern_runtime.messaging.deadletters"
      # Work queues only: a .retry queue has no consumer by design, a .dead queue is read by hand.
      - alert: LanternQueueWithoutConsumer
        expr: |
          max by (vhost, queue) (rabbitmq_detailed_queue_messages_ready{queue!~".+\\.(retry|dead)"}) > 0
          and on (vhost, queue)
          max by (vhost, queue) (rabbitmq_detailed_queue_consumers) == 0
        for: {{ $a.queueWithoutConsumerFor }}
        labels:
          severity: critical
        annotations:
          summary: {{ `"{{ $labels.queue }} holds messages and has no consumer"` }}
  - name: lantern-services
    rules:
      # The outbox's oldest unsent row (the services' gauge lantern.outbox.oldest_age, unit s).
      - alert: LanternOutboxStalled
        expr: |
          max by (service_name) (lantern_outbox_oldest_age_seconds) > {{ $a.outboxOldestAgeSeconds }}
        labels:
          severity: critical
        annotations:
          summary: {{ `"{{ $labels.service_name }}'s outbox has a row unsent for {{ $value }}s"` }}
      # From the collector's span metrics, computed from every span before tail sampling:
      # SERVER spans (HTTP requests) and CONSUMER spans (messages), as Jaeger's Monitor tab counts them.
      - alert: LanternErrorRatioHigh
        expr: |
          sum by (service_name) (rate(traces_span_metrics_calls_total{span_kind=~"SPAN_KIND_SERVER|SPAN_KIND_CONSUMER", status_code="STATUS_CODE_ERROR"}[5m]))
          /
          sum by (service_name) (rate(traces_span_metrics_calls_total{span_kind=~"SPAN_KIND_SERVER|SPAN_KIND_CONSUMER"}[5m]))
          > {{ $a.errorRatio }}
        for: {{ $a.errorRatioFor }}
        labels:
          severity: warning
        annotations:
          summary: {{ `"{{ $labels.service_name }} fails {{ $value | humanizePercentage }} of its requests and messages"` }}
{{- end }}
