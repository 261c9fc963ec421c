{{/*
Schema migrations: an init container in every pod of a component with `database: true`.
It runs `python -m lantern_runtime.storage.migrate <component>` from the component's own image
against its DATABASE_URL, waiting up to migrations.waitSeconds for the database, so the schema
is at head before the service's container starts, on install and on every upgrade.

Why an init container and not a Helm hook Job: a pre-install hook runs before anything of the
release exists, so on a first install there is no PostgreSQL (nor its credentials Secret) yet;
a post-install hook runs only after the release's workloads are ready, which with
`helm install --wait` they never are, as each service waits not-ready for its migrated schema; and
without PostgreSQL each pod has its own SQLite file in /tmp, which only a container of the same
pod can reach. Replicas starting together take turns on a PostgreSQL advisory lock; the others
then find the schema at head and exit at once. During a rollout the new pods migrate before
they serve, while the old pods go on serving the migrated schema: a revision must keep working
for the release before it (expand now, contract in a later release).
Call with (dict "root" $ "name" "orders" "component" $c).
*/}}
{{- define "lantern.migrationInitContainer" -}}
{{- $db := include "lantern.databaseSecret" (dict "root" .root "name" .name) | fromJson -}}
- name: migrate
  image: {{ include "lantern.image" (dict "root" .root "image" .component.image "registry" .root.Values.imageRegistry) | quote }}
  imagePullPolicy: {{ include "lantern.pullPolicy" (dict "root" .root "image" .component.image) }}
  command: [python, -m, lantern_runtime.storage.migrate, {{ .name | quote }}, --wait, {{ .root.Values.migrations.waitSeconds | toString | quote }}]
  env:
    {{- if $db.name }}
    - name: DATABASE_URL
      valueFrom: {secretKeyRef: {name: {{ $db.name }}, key: {{ $db.key }}}}
    {{- else }}
    - name: DATABASE_URL
      value: {{ printf "sqlite+aiosqlite:////tmp/%s.db" .name | quote }}
    {{- end }}
  resources:
    {{- toYaml .component.resources | nindent 4 }}
  securityContext:
    {{- include "lantern.containerSecurityContext" . | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
{{- end }}
