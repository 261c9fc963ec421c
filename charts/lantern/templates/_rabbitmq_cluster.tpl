{{/*
The chart's RabbitMQ as a cluster (rabbitmq.replicas > 1), as JSON {nodes, groupSize, api}:
- nodes: how many; 1 is the single node of earlier releases, rendered exactly as before.
- groupSize: replicas of each quorum queue the topology step creates (QUORUM_INITIAL_GROUP_SIZE)
  and the size continuous membership reconciliation grows existing ones to; 0: not set,
  RabbitMQ's default. rabbitmq.quorumInitialGroupSize, else the node count up to 5: RabbitMQ
  advises 3 or 5 replicas, since each publish waits for a majority of them.
- api: whether peer discovery asks the Kubernetes API for the headless Service's endpoints.
  RabbitMQ up to 4.0 does; from 4.1 the plugin joins node -0 by name and never calls the API,
  so its pods get no token, no Role and no egress to the API server. A tag that is not a
  version (a digest) is taken as an older release: the discovery then works either way.
*/}}
{{- define "lantern.rabbitmqCluster" -}}
{{- $r := .Values.rabbitmq -}}
{{- $nodes := $r.enabled | ternary (int $r.replicas) 0 -}}
{{- $groupSize := 0 -}}
{{- if $r.quorumInitialGroupSize -}}
{{- $groupSize = int $r.quorumInitialGroupSize -}}
{{- if and $r.enabled (gt $groupSize $nodes) -}}
{{- fail (printf "rabbitmq.quorumInitialGroupSize is %d but rabbitmq.replicas is %d: a quorum queue has at most one replica per node; set it to %d or less, or leave it null (the node count, up to 5)" $groupSize $nodes $nodes) -}}
{{- end -}}
{{- else if gt $nodes 1 -}}
{{- $groupSize = min $nodes 5 -}}
{{- end -}}
{{- $api := false -}}
{{- if gt $nodes 1 -}}
{{- $version := regexFind "^[0-9]+\\.[0-9]+(\\.[0-9]+)?" (include "lantern.imageTag" (dict "root" . "image" $r.image)) -}}
{{- $api = or (not $version) (semverCompare "<4.1.0" $version) -}}
{{- end -}}
{{- dict "nodes" $nodes "groupSize" $groupSize "api" $api | toJson -}}
{{- end }}

{{/* rabbitmq.conf lines of a cluster (appended to lantern.rabbitmqConf). */}}
{{- define "lantern.rabbitmqClusterConf" -}}
{{- $cluster := include "lantern.rabbitmqCluster" . | fromJson -}}
{{- if gt (int $cluster.nodes) 1 }}
cluster_formation.peer_discovery_backend = k8s
cluster_formation.k8s.host = kubernetes.default.svc
cluster_formation.k8s.address_type = hostname
cluster_formation.k8s.service_name = rabbitmq-headless
cluster_formation.k8s.hostname_suffix = .rabbitmq-headless.{{ .Release.Namespace }}
cluster_partition_handling = pause_minority
quorum_queue.continuous_membership_reconciliation.enabled = true
quorum_queue.continuous_membership_reconciliation.target_group_size = {{ $cluster.groupSize }}
{{- end }}
{{- end }}
