{{/* Labels of every object; the same as services/api/manifests.py renders. */}}
{{- define "tether-agent.labels" -}}
app.kubernetes.io/name: tether-agent
app.kubernetes.io/part-of: tether
tether.dev/cluster: {{ required "set cluster: the cluster's name on the platform" .Values.cluster | quote }}
{{- end }}

{{- define "tether-agent.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
