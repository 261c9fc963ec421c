{{/* Labels every object carries. */}}
{{- define "lantern.labels" -}}
app.kubernetes.io/part-of: lantern
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/*
Pod selector labels of one workload: the component label is also what the
downward API turns into OTEL_SERVICE_NAME and what NetworkPolicies select.
Call with (dict "root" $ "name" "orders").
*/}}
{{- define "lantern.selectorLabels" -}}
app.kubernetes.io/part-of: lantern
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{/*
Image reference. Skaffold sets tag to "TAG@DIGEST"; for images it only loads
into the cluster the digest is empty, so a dangling "@" is dropped.
Call with (dict "root" $ "image" .image "registry" "...").
*/}}
{{- define "lantern.image" -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion | toString | trimSuffix "@" -}}
{{- $repo := .image.repository -}}
{{- if .registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" .registry) $repo }}{{ end -}}
{{- if hasPrefix "sha256:" $tag }}{{ printf "%s@%s" $repo $tag }}{{ else }}{{ printf "%s:%s" $repo $tag }}{{ end -}}
{{- end }}

{{/* Restricted Pod Security: pod level. */}}
{{- define "lantern.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Restricted Pod Security: container level. */}}
{{- define "lantern.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end }}

{{/* Name of the Secret and key that hold AMQP_URL. */}}
{{- define "lantern.amqpSecret" -}}
{{- if .Values.rabbitmq.enabled -}}
{{ dict "name" "rabbitmq-credentials" "key" "url" | toJson }}
{{- else if .Values.rabbitmq.external.existingSecret -}}
{{ dict "name" .Values.rabbitmq.external.existingSecret "key" .Values.rabbitmq.external.urlKey | toJson }}
{{- else -}}
{{ fail "rabbitmq.enabled=false needs rabbitmq.external.existingSecret: the name of a Secret holding the AMQP URL" }}
{{- end -}}
{{- end }}

{{/* Name of the Secret and key that hold DATABASE_URL, or {} for SQLite in /tmp. */}}
{{- define "lantern.databaseSecret" -}}
{{- if .Values.postgres.enabled -}}
{{ dict "name" "postgres-credentials" "key" "url" | toJson }}
{{- else if .Values.postgres.external.existingSecret -}}
{{ dict "name" .Values.postgres.external.existingSecret "key" .Values.postgres.external.urlKey | toJson }}
{{- else -}}
{{ dict | toJson }}
{{- end -}}
{{- end }}

{{/*
A password from values, else the one already stored in the Secret, else a new
random one: upgrades keep what install generated.
Call with (dict "root" $ "secret" "rabbitmq-credentials" "given" .Values.rabbitmq.auth.password).
*/}}
{{- define "lantern.password" -}}
{{- if .given -}}
{{ .given }}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- if and $existing $existing.data (hasKey $existing.data "password") -}}
{{ index $existing.data "password" | b64dec }}
{{- else -}}
{{ randAlphaNum 32 }}
{{- end -}}
{{- end -}}
{{- end }}
