{{- define "authority.name" -}}{{ .Release.Name }}{{- end -}}
{{- define "authority.labels" -}}
app.kubernetes.io/name: authority
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
{{- define "authority.selector" -}}
app.kubernetes.io/name: authority
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "authority.host" -}}{{ printf "%s-%d.%s.%s.svc.cluster.local" .name .i .name .ns }}{{- end -}}
