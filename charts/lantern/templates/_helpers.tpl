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
{{- $tag := include "lantern.imageTag" (dict "root" .root "image" .image) | trimSuffix "@" -}}
{{- $repo := .image.repository -}}
{{- if .registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" .registry) $repo }}{{ end -}}
{{- if hasPrefix "sha256:" $tag }}{{ printf "%s@%s" $repo $tag }}{{ else }}{{ printf "%s:%s" $repo $tag }}{{ end -}}
{{- end }}

{{/*
A scalar value as the string a user typed. Values files hand Helm every number as a
float64, which prints 20261201 as 2.0261201e+07; a whole number prints as one.
*/}}
{{- define "lantern.scalarString" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}{{ int64 . }}{{ else }}{{ toString . }}{{ end -}}
{{- end }}

{{/*
An image's tag as a string (the schema takes a string or a whole number, such as a
date tag from --set), else the chart's appVersion. Call with (dict "root" $ "image" .image).
*/}}
{{- define "lantern.imageTag" -}}
{{- if or (kindIs "string" .image.tag) (kindIs "invalid" .image.tag) -}}
{{ .image.tag | default .root.Chart.AppVersion }}
{{- else -}}
{{ include "lantern.scalarString" .image.tag }}
{{- end -}}
{{- end }}

{{/*
Pull policy of a Lantern image. A set tag names one build: IfNotPresent. No tag means the
chart's appVersion, a tag every rebuild is pushed under again, so appVersionTagPullPolicy
(Always in staging; IfNotPresent on kind, whose nodes hold loaded images and cannot pull).
Call with (dict "root" $ "image" .image).
*/}}
{{- define "lantern.pullPolicy" -}}
{{- if .image.tag -}}
IfNotPresent
{{- else -}}
{{ .root.Values.appVersionTagPullPolicy }}
{{- end -}}
{{- end }}

{{/* imagePullSecrets of every pod the chart makes, the helm test's included. */}}
{{- define "lantern.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets -}}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Restricted Pod Security: pod level. With "persistent" true (pods with a
PersistentVolume), the kubelet changes the volume's ownership and modes only while
its root does not already belong to fsGroup, instead of on every mount: a recursive
pass would widen RabbitMQ's .erlang.cookie (which Erlang then refuses) and
PostgreSQL's data directory, and walks every file of a large volume at each start.
*/}}
{{- define "lantern.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
{{- if .persistent }}
fsGroupChangePolicy: OnRootMismatch
{{- end }}
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

{{/*
Name of the Secret and key that hold one component's AMQP_URL: its own broker
user's, key <name>-url. Call with (dict "root" $ "name" "orders").
*/}}
{{- define "lantern.amqpSecret" -}}
{{- $rabbitmq := .root.Values.rabbitmq -}}
{{- if $rabbitmq.enabled -}}
{{ dict "name" "rabbitmq-credentials" "key" (printf "%s-url" .name) | toJson }}
{{- else if $rabbitmq.external.existingSecret -}}
{{ dict "name" $rabbitmq.external.existingSecret "key" (printf "%s-url" .name) | toJson }}
{{- else -}}
{{ fail "rabbitmq.enabled=false needs rabbitmq.external.existingSecret: the name of a Secret holding the AMQP URLs" }}
{{- end -}}
{{- end }}

{{/*
Name of the Secret and key that hold the broker administrator's AMQP URL. Only the
topology init containers (templates/_topology.tpl) read it, never a service.
*/}}
{{- define "lantern.amqpAdminSecret" -}}
{{- if .Values.rabbitmq.enabled -}}
{{ dict "name" "rabbitmq-credentials" "key" "url" | toJson }}
{{- else if .Values.rabbitmq.external.existingSecret -}}
{{ dict "name" .Values.rabbitmq.external.existingSecret "key" .Values.rabbitmq.external.urlKey | toJson }}
{{- else -}}
{{ fail "rabbitmq.enabled=false needs rabbitmq.external.existingSecret: the name of a Secret holding the AMQP URLs" }}
{{- end -}}
{{- end }}

{{/* Names of the enabled components with `amqp`, sorted: each has a broker user of its name. */}}
{{- define "lantern.amqpUsers" -}}
{{- $names := list -}}
{{- range $name, $c := .Values.components }}{{ if and $c.enabled $c.amqp }}{{ $names = append $names $name }}{{ end }}{{ end -}}
{{ $names | sortAlpha | toJson }}
{{- end }}

{{/*
One broker user's permissions, as JSON {configure, write, read, topics: [{exchange,
write, read}]}: the rules of apps/lantern_runtime/messaging/permissions.py (which
says why), from the component's name and `amqp.publishes` (none for `amqp: true`).
Call with (dict "name" "orders" "amqp" $c.amqp).
*/}}
{{- define "lantern.brokerPermissions" -}}
{{- $published := list -}}
{{- if kindIs "map" .amqp }}{{ $published = .amqp.publishes | default list }}{{ end -}}
{{- $events := list -}}
{{- range $published | uniq | sortAlpha }}{{ $events = append $events (regexQuoteMeta .) }}{{ end -}}
{{- $exchanges := list -}}
{{- if $events }}{{ $exchanges = append $exchanges (regexQuoteMeta "lantern.events") }}{{ end -}}
{{- $exchanges = append $exchanges (regexQuoteMeta "lantern.redeliveries") -}}
{{- $own := regexQuoteMeta .name -}}
{{- $eventKeys := "^$" -}}
{{- if $events }}{{ $eventKeys = printf "^(%s)$" (join "|" $events) }}{{ end -}}
{{- $topics := list
  (dict "exchange" "lantern.events" "write" $eventKeys "read" "^$")
  (dict "exchange" "lantern.redeliveries" "write" (printf "^%s\\.[^.]+\\.(retry|dead)$" $own) "read" "^$")
-}}
{{- dict
  "configure" "^$"
  "write" (printf "^(%s)$" (join "|" $exchanges))
  "read" (printf "^%s\\.[^.]+$" $own)
  "topics" $topics
  | toJson -}}
{{- end }}

{{/*
Name of the Secret and key that hold one component's DATABASE_URL, or {} for
SQLite in /tmp. Each component with `database: true` has its own database.
Call with (dict "root" $ "name" "orders").
*/}}
{{- define "lantern.databaseSecret" -}}
{{- $postgres := .root.Values.postgres -}}
{{- if $postgres.enabled -}}
{{ dict "name" "postgres-credentials" "key" (printf "%s-url" .name) | toJson }}
{{- else if $postgres.external.existingSecret -}}
{{ dict "name" $postgres.external.existingSecret "key" (printf "%s-url" .name) | toJson }}
{{- else -}}
{{ dict | toJson }}
{{- end -}}
{{- end }}

{{/* Names of the enabled components that own a database, sorted. */}}
{{- define "lantern.databaseOwners" -}}
{{- $names := list -}}
{{- range $name, $c := .Values.components }}{{ if and $c.enabled $c.database }}{{ $names = append $names $name }}{{ end }}{{ end -}}
{{ $names | sortAlpha | toJson }}
{{- end }}

{{/* The Secret with the gateway's jwt-secret and the subject-secret (gateway and trustsSubject components). */}}
{{- define "lantern.authSecret" -}}
{{- .Values.auth.existingSecret | default "gateway-auth" -}}
{{- end }}

{{/*
Environment variables a component reads from Secrets, as a JSON list of
{env, secret, key}: AMQP_URL, DATABASE_URL, the subject key (GATEWAY_SUBJECT_SECRET)
for the gateway and the components with `trustsSubject` only and, for the gateway,
its token key and REDIS_URL.
Call with (dict "root" $ "name" "orders" "component" $c).
*/}}
{{- define "lantern.secretEnv" -}}
{{- $v := .root.Values -}}
{{- $out := list -}}
{{- if .component.amqp }}
{{- $amqp := include "lantern.amqpSecret" (dict "root" .root "name" .name) | fromJson -}}
{{- $out = append $out (dict "env" "AMQP_URL" "secret" $amqp.name "key" $amqp.key) -}}
{{- end }}
{{- if .component.database }}
{{- $db := include "lantern.databaseSecret" (dict "root" .root "name" .name) | fromJson -}}
{{- if $db.name }}{{ $out = append $out (dict "env" "DATABASE_URL" "secret" $db.name "key" $db.key) }}{{ end -}}
{{- end }}
{{- $auth := include "lantern.authSecret" .root -}}
{{- /* Only who signs (the gateway) and who relies on the subject: the key speaks for anyone. */ -}}
{{- if or (eq .name "gateway") .component.trustsSubject }}
{{- $out = append $out (dict "env" "GATEWAY_SUBJECT_SECRET" "secret" $auth "key" "subject-secret") -}}
{{- end }}
{{- if eq .name "gateway" }}
{{- if not $v.auth.jwksUrl }}{{ $out = append $out (dict "env" "GATEWAY_JWT_SECRET" "secret" $auth "key" "jwt-secret") }}{{ end -}}
{{- if $v.redis.existingSecret }}{{ $out = append $out (dict "env" "REDIS_URL" "secret" $v.redis.existingSecret "key" $v.redis.urlKey) }}{{ end -}}
{{- end }}
{{- $out | toJson -}}
{{- end }}

{{/*
The gateway's plain edge settings (GATEWAY_*, FORWARDED_ALLOW_IPS), merged
into its ConfigMap. HSTS only where the public entry terminates TLS.
*/}}
{{- define "lantern.edgeConfig" -}}
{{- $v := .Values -}}
{{- $out := dict
  "GATEWAY_ROUTES_FILE" "/etc/lantern/gateway/routes.json"
  "GATEWAY_RATE_LIMIT" ($v.edge.rateLimit | toString)
-}}
{{- with $v.edge.forwardedAllowIps }}{{ $_ := set $out "FORWARDED_ALLOW_IPS" (join "," .) }}{{ end -}}
{{- with $v.edge.corsOrigins }}{{ $_ := set $out "GATEWAY_CORS_ORIGINS" (join "," .) }}{{ end -}}
{{- $tls := or (and $v.ingress.gatewayAPI.enabled $v.ingress.gatewayAPI.tls.enabled) (and $v.ingress.ingress.enabled $v.ingress.ingress.tls.enabled) -}}
{{- if and $tls $v.edge.hstsMaxAge }}{{ $_ := set $out "GATEWAY_HSTS_MAX_AGE" (int $v.edge.hstsMaxAge | toString) }}{{ end -}}
{{- with $v.auth.jwksUrl }}{{ $_ := set $out "GATEWAY_JWKS_URL" . }}{{ end -}}
{{- with $v.auth.issuer }}{{ $_ := set $out "GATEWAY_JWT_ISSUER" . }}{{ end -}}
{{- with $v.auth.audience }}{{ $_ := set $out "GATEWAY_JWT_AUDIENCE" . }}{{ end -}}
{{- $out | toJson -}}
{{- end }}

{{/* The route table as the gateway reads it from GATEWAY_ROUTES_FILE. */}}
{{- define "lantern.routesJson" -}}
{{- .Values.edge.routes | toPrettyJson -}}
{{- end }}

{{/*
A password from values, else the one already stored in the Secret under `key`
(default "password"), else a new random one of `length` (default 32): upgrades
keep what install generated. `helm template` cannot look, so it renders new ones.
Call with (dict "root" $ "secret" "rabbitmq-credentials" "given" .Values.rabbitmq.auth.password).
*/}}

{{/*
Metadata of a Secret whose values the chart generates. `helm uninstall` leaves it
(resource-policy keep), so a later `helm install` of the same release in the same
namespace adopts it and the lookup above finds the old values. Why: the
StatefulSets' PersistentVolumeClaims also outlive an uninstall, and RabbitMQ and
PostgreSQL apply credentials only when they initialise an empty data directory;
fresh random passwords would lock every service out of the kept data. Keeping the
Secret (rather than deleting the PVCs with persistentVolumeClaimRetentionPolicy)
keeps the queues and orders as well, on kind and on any cluster alike.
*/}}
{{- define "lantern.keptSecretAnnotations" -}}
helm.sh/resource-policy: keep
{{- end }}
{{- define "lantern.password" -}}
{{- $key := .key | default "password" -}}
{{- if .given -}}
{{ .given }}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- if and $existing $existing.data (hasKey $existing.data $key) -}}
{{ index $existing.data $key | b64dec }}
{{- else -}}
{{ randAlphaNum (.length | default 32) }}
{{- end -}}
{{- end -}}
{{- end }}
