{{- define "chat.selectorLabels" -}}
app.kubernetes.io/name: chat
app.kubernetes.io/component: server
{{- end }}

{{- /* The agent's GET /watch for readiness_client in the app (README "In your app"): the agent's watch_port on
IPv4 loopback (the agent serves it on 127.0.0.1 and ::1 only). Called with the dependency's scope. */}}
{{- define "chat.watchUrl" -}}
{{- $port := toString .Values.agent.settings.watch_port -}}
{{- $port = eq $port "" | ternary "9181" $port -}}
{{- if eq $port "0" -}}
{{- fail "readiness-agent.agent.settings.watch_port is 0 (GET /watch off), but the chat app follows it with readiness_client: leave it unset (9181) or give it a port" -}}
{{- end -}}
http://127.0.0.1:{{ $port }}/watch
{{- end }}
