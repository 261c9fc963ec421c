{{/*
The topology step: an init container in every pod of a component with `amqp`. It runs
`python -m lantern_runtime.messaging.declare <component>` from the component's own image
with the broker administrator's URL (lantern.amqpAdminSecret), waiting up to
rabbitmq.topologyWaitSeconds for the broker, so every exchange, queue and binding exists
before the service starts. The service's own container gets only its own user's URL, whose
permissions declare and delete nothing (lantern_runtime/messaging/permissions.py): it looks
the topology up and waits, saying which queue is missing, should it ever not be there.
Idempotent: replicas and components run it side by side, and an upgrade adds what the new
release declares (a new exchange or binding) to the existing broker.
Call with (dict "root" $ "name" "orders" "component" $c).
*/}}
{{- define "lantern.topologyInitContainer" -}}
{{- $admin := include "lantern.amqpAdminSecret" .root | fromJson -}}
- name: topology
  image: {{ include "lantern.image" (dict "root" .root "image" .component.image "registry" .root.Values.imageRegistry) | quote }}
  imagePullPolicy: {{ include "lantern.pullPolicy" (dict "root" .root "image" .component.image) }}
  command: [python, -m, lantern_runtime.messaging.declare, {{ .name | quote }}, --wait, {{ .root.Values.rabbitmq.topologyWaitSeconds | toString | quote }}]
  env:
    - name: AMQP_URL
      valueFrom: {secretKeyRef: {name: {{ $admin.name }}, key: {{ $admin.key }}}}
    {{- $cluster := include "lantern.rabbitmqCluster" .root | fromJson }}
    {{- if $cluster.groupSize }}
    # Replicas of each quorum queue created (rabbitmq.quorumInitialGroupSize).
    - name: QUORUM_INITIAL_GROUP_SIZE
      value: {{ int $cluster.groupSize | toString | quote }}
    {{- end }}
  resources:
    {{- toYaml .component.resources | nindent 4 }}
  securityContext:
    {{- include "lantern.containerSecurityContext" . | nindent 4 }}
{{- end }}
