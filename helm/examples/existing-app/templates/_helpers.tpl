{{- define "chat.selectorLabels" -}}
app.kubernetes.io/name: chat
app.kubernetes.io/component: server
{{- end }}
