{{/*
Names. The chart wraps *your* workload, so its objects are named after the release (not after this chart).
*/}}
{{- define "readiness-agent.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "readiness-agent.name" -}}
{{- default .Release.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of the agent-specific objects (metrics Service, monitors, RBAC). Never plain "readiness-agent": a Service
of that name makes Kubernetes inject READINESS_AGENT_PORT into pods. The alert rules match
job=~".*readiness-agent.*", and the job label is this name.
*/}}
{{- define "readiness-agent.agentName" -}}
{{- /* the prefix is cut, never the suffix: "-readiness-ag" would leave every alert's job regex unmatched */ -}}
{{- printf "%s-readiness-agent" (include "readiness-agent.fullname" . | trunc 47 | trimSuffix "-") }}
{{- end }}

{{- define "readiness-agent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "readiness-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "readiness-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "readiness-agent.labels" -}}
helm.sh/chart: {{ include "readiness-agent.chart" . }}
{{ include "readiness-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The agent's image: repository@digest when agent.image.digest is set (the tag is then ignored), else :tag. */}}
{{- define "readiness-agent.image" -}}
{{- with .Values.agent.image }}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository (.tag | default $.Chart.AppVersion) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Labels that select the pods running the agent (metrics Service, PodMonitoring, NetworkPolicy): podSelector when
set (an existing app's own pod labels, workload.enabled=false), else the standalone workload's selector labels.
*/}}
{{- define "readiness-agent.podSelector" -}}
{{- if .Values.podSelector }}
{{- toYaml .Values.podSelector }}
{{- else }}
{{- include "readiness-agent.selectorLabels" . }}
{{- end }}
{{- end }}

{{/* Labels of the agent-specific objects: the ServiceMonitor selects the metrics Service by them. */}}
{{- define "readiness-agent.agentLabels" -}}
{{ include "readiness-agent.labels" . }}
app.kubernetes.io/component: readiness-agent
{{- end }}

{{/*
The gate needs an account bound to the Role: enabling it creates one unless serviceAccount.name names an
existing account, and always creates the Role and RoleBinding (so a pod never waits on a gate nobody can set).
*/}}
{{- define "readiness-agent.createServiceAccount" -}}
{{- if or .Values.serviceAccount.create (and .Values.readinessGate.enabled (not .Values.serviceAccount.name)) }}true{{ end }}
{{- end }}

{{- define "readiness-agent.createRbac" -}}
{{- if or .Values.rbac.create .Values.readinessGate.enabled }}true{{ end }}
{{- end }}

{{- define "readiness-agent.serviceAccountName" -}}
{{- if include "readiness-agent.createServiceAccount" . }}
{{- default (include "readiness-agent.agentName" .) .Values.serviceAccount.name }}
{{- else }}
{{- .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "readiness-agent.conditionType" -}}
{{- .Values.agent.settings.kube_condition_type | default "readiness-agent.io/dependencies-ready" }}
{{- end }}

{{/*
The agent settings this chart may turn into READINESS_AGENT_* variables. `listen` follows agent.port and
agent.listenHost, `kube_readiness_gate` follows readinessGate.enabled. An unknown key fails the render: the
agent would only warn about an unknown variable and run with its default, silently.
*/}}
{{- define "readiness-agent.settingKeys" -}}
redis_url platform window interval retry_interval timeout failure_threshold flap_window backoff_after jitter startup_timeout exit_on_startup_timeout readiness_mode drain_seconds drain_token_file log_format log_level redis_password_file redis_ca_file redis_cert_file redis_key_file kube_condition_type kubeconfig redis_auth redis_tls_server_name redis_tls_skip_hostname_check redis_write_canary redis_pubsub_roundtrip redis_canary_interval redis_fresh_connection_interval redis_require_master redis_sentinel_password redis_sentinel_password_file watch_port
{{- end }}

{{/* Checks on values that the schema of the rendered objects cannot catch. */}}
{{- define "readiness-agent.validate" -}}
{{- $known := splitList " " (include "readiness-agent.settingKeys" .) }}
{{- range $key, $value := .Values.agent.settings }}
{{- if not (has $key $known) }}
{{- if eq $key "listen" }}
{{- fail "agent.settings.listen: set agent.port (and agent.listenHost) instead, so the probes follow it" }}
{{- else if eq $key "kube_readiness_gate" }}
{{- fail "agent.settings.kube_readiness_gate: use readinessGate.enabled" }}
{{- else }}
{{- fail (printf "agent.settings.%s: unknown agent setting (known: %s)" $key (join ", " $known)) }}
{{- end }}
{{- end }}
{{- end }}
{{- if .Values.workload.enabled }}
{{- if not (and .Values.app.container.name .Values.app.container.image) }}
{{- fail "app.container needs at least name and image" }}
{{- end }}
{{- if eq .Values.app.container.name "readiness-agent" }}
{{- fail "app.container.name: \"readiness-agent\" is the sidecar's name; choose another" }}
{{- end }}
{{- else if and (not .Values.podSelector) (or .Values.metrics.service.enabled .Values.metrics.podMonitoring.enabled .Values.networkPolicy.enabled) }}
{{- fail "podSelector: with workload.enabled=false set it to your app's pod labels (the metrics Service, PodMonitoring and NetworkPolicy select the pods by it)" }}
{{- end }}
{{- if and (not .Values.agent.settings.redis_url) (not .Values.agent.redisUrlSecret.name) (not .Values.agent.config) }}
{{- fail "no Redis to check: set agent.redisUrlSecret.name, agent.settings.redis_url or agent.config.checks" }}
{{- end }}
{{- with .Values.gke.healthCheck }}
{{- if gt (int .timeoutSec) (int .checkIntervalSec) }}
{{- fail (printf "gke.healthCheck.timeoutSec (%d) must not exceed checkIntervalSec (%d): Google Cloud refuses such a health check" (int .timeoutSec) (int .checkIntervalSec)) }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.service.enabled (it scrapes through that Service)" }}
{{- end }}
{{- end }}

{{/* The agent's environment: every non-empty setting as READINESS_AGENT_<KEY>. */}}
{{- define "readiness-agent.env" -}}
{{- if .Values.agent.settings.redis_url }}
- name: READINESS_AGENT_REDIS_URL
  value: {{ .Values.agent.settings.redis_url | quote }}
{{- else if .Values.agent.redisUrlSecret.name }}
- name: READINESS_AGENT_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.agent.redisUrlSecret.name }}
      key: {{ .Values.agent.redisUrlSecret.key | default "url" }}
{{- end }}
{{- if or (ne (int .Values.agent.port) 9180) (ne .Values.agent.listenHost "0.0.0.0") }}
- name: READINESS_AGENT_LISTEN
  value: {{ printf (ternary "[%s]:%d" "%s:%d" (contains ":" .Values.agent.listenHost)) .Values.agent.listenHost (int .Values.agent.port) | quote }}
{{- end }}
{{- range $key, $value := .Values.agent.settings }}
{{- if and (ne $key "redis_url") (not (kindIs "invalid" $value)) (ne (toString $value) "") }}
- name: {{ printf "READINESS_AGENT_%s" (upper $key) }}
  value: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- if .Values.agent.config }}
- name: READINESS_AGENT_CONFIG
  value: /etc/readiness-agent/config.yaml
{{- end }}
{{- if .Values.readinessGate.enabled }}
- name: READINESS_AGENT_KUBE_READINESS_GATE
  value: "true"
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}
{{- with .Values.agent.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Pod annotations of the agent: a checksum of its config file, so a changed agent.config rolls the pods (the agent
reads the file once at start). Always rendered (a constant without a config), so a parent can put it under its
own `annotations:` unconditionally.
*/}}
{{- define "readiness-agent.podAnnotations" -}}
checksum/readiness-agent-config: {{ toYaml (.Values.agent.config | default dict) | sha256sum }}
{{- end }}

{{/*
The app container as given, plus default probes (app.probes) where it has none, and a preStop hook when it has
none (docs/gke.md "Shutdown order"): the pod is removed
from the Service's endpoints and the load balancer's NEG at the same moment the kubelet starts the hook, so the
app keeps serving while that removal propagates and gets SIGTERM only afterwards.
*/}}
{{- define "readiness-agent.appContainer" -}}
{{- include "readiness-agent._appContainer" . | trim }}
{{- end }}

{{- define "readiness-agent._appContainer" -}}
{{- $container := deepCopy .Values.app.container }}
{{- $action := .Values.app.preStopAction }}
{{- $seconds := int .Values.app.preStopSleepSeconds }}
{{- $hasPreStop := and $container.lifecycle (hasKey $container.lifecycle "preStop") }}
{{- $probes := .Values.app.probes }}
{{- $port := $probes.port | default (first (default (list) $container.ports) | default (dict) | dig "containerPort" "") }}
{{- if and $probes.enabled $port }}
{{- $tcp := dict "tcpSocket" (dict "port" $port) }}
{{- if not (hasKey $container "startupProbe") }}
{{- $_ := set $container "startupProbe" (merge (deepCopy $probes.startupProbe) $tcp) }}
{{- end }}
{{- if not (hasKey $container "readinessProbe") }}
{{- $_ := set $container "readinessProbe" (merge (deepCopy $probes.readinessProbe) $tcp) }}
{{- end }}
{{- end }}
{{- if and (ne $action "none") (not $hasPreStop) (gt $seconds 0) }}
{{- if and (eq $action "sleep") (semverCompare "<1.30.0-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "app.preStopAction: the sleep action needs Kubernetes >= 1.30 (on by default from 1.30, GA in 1.34); this is %s: use exec (runs `sleep` in the app image) or none" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- $hook := dict "sleep" (dict "seconds" $seconds) }}
{{- if eq $action "exec" }}
{{- $hook = dict "exec" (dict "command" (list "sleep" (toString $seconds))) }}
{{- end }}
{{- $lifecycle := deepCopy (default (dict) $container.lifecycle) }}
{{- $_ := set $lifecycle "preStop" $hook }}
{{- $_ := set $container "lifecycle" $lifecycle }}
{{- end }}
- {{ toYaml $container | indent 2 | trim }}
{{- end }}

{{/* The Service GKE's load balancer uses: gke.serviceName, else the standalone app Service. */}}
{{- define "readiness-agent.lbServiceName" -}}
{{- if .Values.gke.serviceName }}
{{- .Values.gke.serviceName }}
{{- else if and .Values.workload.enabled .Values.app.service.enabled }}
{{- include "readiness-agent.fullname" . }}
{{- else }}
{{- fail "gke.serviceName: name the Service your load balancer uses (with workload.enabled=false or app.service.enabled=false there is no app Service of this chart)" }}
{{- end }}
{{- end }}
