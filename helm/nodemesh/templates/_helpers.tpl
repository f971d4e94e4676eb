{{/*
The objects have fixed names (nodemesh-agent, nodemesh-aggregator): one nodemesh per cluster,
since every agent attaches its programs to its node's whole cgroup tree.
*/}}

{{- define "nodemesh.chart" -}}
{{ .Chart.Name }}-{{ .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "nodemesh.labels" -}}
helm.sh/chart: {{ include "nodemesh.chart" . }}
app.kubernetes.io/name: nodemesh
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nodemesh
{{- end }}

{{/*
Selector labels of a component ("agent", "aggregator"): the DaemonSet's and Deployment's
selectors, which cannot change after install, so they hold nothing that an upgrade changes.
*/}}
{{- define "nodemesh.selectorLabels" -}}
app.kubernetes.io/name: nodemesh
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Labels of a component's objects and pods. app.kubernetes.io/part-of=nodemesh also tells
every agent never to mesh nodemesh's own pods (common/kube/pods.h).
*/}}
{{- define "nodemesh.componentLabels" -}}
{{ include "nodemesh.labels" .context }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "nodemesh.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The aggregator's address as the agents and meshctl dial it. */}}
{{- define "nodemesh.aggregatorAddress" -}}
nodemesh-aggregator.{{ .Release.Namespace }}.svc:{{ .Values.aggregator.port }}
{{- end }}

{{/*
The aggregator's replicas, one address each: the headless Service's name. Agents stream to
every one, and replicas ask one another for what they missed. Their certificate names the
Service (nodemesh.aggregatorServerName), which they are verified as.
*/}}
{{- define "nodemesh.aggregatorReplicas" -}}
nodemesh-aggregator-replicas.{{ .Release.Namespace }}.svc:{{ .Values.aggregator.port }}
{{- end }}

{{- define "nodemesh.aggregatorServerName" -}}
nodemesh-aggregator.{{ .Release.Namespace }}.svc
{{- end }}

{{/*
The pod-security.kubernetes.io/enforce label of the release's namespace as the cluster has
it now; empty when the label is not set, and with `helm template` or --dry-run, which see no
cluster.
*/}}
{{- define "nodemesh.podSecurityLevel" -}}
{{- $namespace := lookup "v1" "Namespace" "" .Release.Namespace -}}
{{- dig "metadata" "labels" "pod-security.kubernetes.io/enforce" "" $namespace -}}
{{- end }}

{{/*
The Secret holding the aggregator's certificate (tls.crt, tls.key) and the CA that issued it
(ca.crt): the operator's (aggregator.tls.existingSecret) or the chart's (aggregator-tls.yaml).
*/}}
{{- define "nodemesh.aggregatorTLSSecret" -}}
{{ .Values.aggregator.tls.existingSecret | default "nodemesh-aggregator-tls" }}
{{- end }}

{{/*
The volume of that Secret's ca.crt alone, for pods that dial the aggregator: they verify
its certificate with it and never get its private key.
*/}}
{{- define "nodemesh.aggregatorCAVolume" -}}
- name: aggregator-ca
  secret:
    secretName: {{ include "nodemesh.aggregatorTLSSecret" . }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
