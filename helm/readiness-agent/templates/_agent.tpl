{{/*
The agent as a library: named templates an existing app's chart includes in its own pod template, so the agent
joins *its* Deployment (selector, Service and container names stay the app's). Every one takes this chart's
scope, which a parent gets from `.Subcharts` (Helm >= 3.7), so the agent's values are this chart's values:

  # Chart.yaml of your chart
  dependencies:
    - name: readiness-agent
      version: 0.3.0
      repository: file://../readiness-agent

  # your Deployment's pod template: the three lines
  spec:
    {{- with index .Subcharts "readiness-agent" }}{{ include "readiness-agent.podFields" . | nindent 6 }}{{ end }}
    initContainers:
      {{- with index .Subcharts "readiness-agent" }}{{ include "readiness-agent.sidecar" . | nindent 8 }}{{ end }}
    volumes:
      {{- with index .Subcharts "readiness-agent" }}{{ include "readiness-agent.volumes" . | nindent 8 }}{{ end }}

  # your values.yaml: turn the standalone workload off, say which pods run the agent
  readiness-agent:
    workload: {enabled: false}
    podSelector: {app.kubernetes.io/name: chat}

The subchart renders the agent's own objects itself (RBAC for the gate, its config ConfigMap, the metrics
Service and monitors, NetworkPolicy); see helm/examples/existing-app. Nothing here sets pod-level fields beyond
readinessGates and serviceAccountName: the agent's container carries its own user, group, read-only root,
capabilities and seccomp profile, and its own API token when the gate is on.
*/}}

{{/* Pod-level fields the agent needs: the gate's readinessGates entry and the account its RBAC is bound to. */}}
{{- define "readiness-agent.podFields" -}}
{{- include "readiness-agent._podFields" . | trim }}
{{- end }}

{{- define "readiness-agent._podFields" -}}
{{- $sa := include "readiness-agent.serviceAccountName" . }}
{{- if $sa }}
serviceAccountName: {{ $sa }}
{{- end }}
{{- if .Values.readinessGate.enabled }}
# The pod is Ready only once the agent has set this condition True (and while it stays True).
readinessGates:
  - conditionType: {{ include "readiness-agent.conditionType" . }}
{{- end }}
{{- end }}

{{/* The agent's own volumes: its config file, its API token (gate only), and `volumes` (what it mounts). */}}
{{- define "readiness-agent.volumes" -}}
{{- include "readiness-agent._volumes" . | trim }}
{{- end }}

{{- define "readiness-agent._volumes" -}}
{{- if .Values.agent.config }}
- name: readiness-agent-config
  configMap:
    name: {{ include "readiness-agent.agentName" . }}
{{- end }}
{{- if .Values.readinessGate.enabled }}
# The agent's API credentials, mounted in its container only (the pod can keep
# automountServiceAccountToken false): the sources of Kubernetes' own kube-api-access
# volume, i.e. a token the kubelet rotates (3607 s, that volume's expiry), the CA, the namespace.
- name: readiness-agent-kube-api
  projected:
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3607
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
      - downwardAPI:
          items:
            - path: namespace
              fieldRef:
                apiVersion: v1
                fieldPath: metadata.namespace
{{- end }}
{{- with .Values.volumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The agent as a native sidecar: an init container with restartPolicy Always keeps running next to the app, and
the kubelet starts the next container only once its startupProbe (/startupz: Redis stable for the window) has
passed. Probe timings are explained next to agent.startupProbe / readinessProbe / livenessProbe in values.yaml.
*/}}
{{- define "readiness-agent.sidecar" -}}
{{- include "readiness-agent._sidecar" . | trim }}
{{- end }}

{{- define "readiness-agent._sidecar" -}}
{{- include "readiness-agent.validate" . }}
{{- $port := int .Values.agent.port }}
- name: readiness-agent
  image: {{ include "readiness-agent.image" . | quote }}
  imagePullPolicy: {{ .Values.agent.image.pullPolicy }}
  restartPolicy: Always
  args: ["run"]
  ports:
    - name: metrics
      containerPort: {{ $port }}
      protocol: TCP
  env:
    {{- include "readiness-agent.env" . | trim | nindent 4 }}
  startupProbe:
    httpGet:
      path: /startupz
      port: {{ $port }}
    {{- toYaml .Values.agent.startupProbe | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: {{ $port }}
    {{- toYaml .Values.agent.readinessProbe | nindent 4 }}
  livenessProbe:
    httpGet:
      path: /livez
      port: {{ $port }}
    {{- toYaml .Values.agent.livenessProbe | nindent 4 }}
  resources:
    {{- include "readiness-agent.resources" . | nindent 4 }}
  {{- with .Values.agent.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if or .Values.agent.config .Values.readinessGate.enabled .Values.agent.volumeMounts }}
  volumeMounts:
    {{- if .Values.agent.config }}
    - name: readiness-agent-config
      mountPath: /etc/readiness-agent
      readOnly: true
    {{- end }}
    {{- if .Values.readinessGate.enabled }}
    # Where in-cluster config looks; Kubernetes then mounts no other token into this container.
    - name: readiness-agent-kube-api
      mountPath: /var/run/secrets/kubernetes.io/serviceaccount
      readOnly: true
    {{- end }}
    {{- with .Values.agent.volumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
{{- end }}

{{/* The agent container's resources: agent.resources, else sized from the measured peaks. */}}
{{- define "readiness-agent.resources" -}}
{{- if .Values.agent.resources }}
{{- toYaml .Values.agent.resources }}
{{- else }}
{{- /* measured peaks (docs/benchmarks.md): gate off 84 MiB, gate on 123 MiB; limits >= 1.5 x peak */ -}}
requests:
  cpu: 50m
  memory: {{ ternary "128Mi" "96Mi" (and .Values.readinessGate.enabled true) }}
limits:
  memory: {{ ternary "192Mi" "160Mi" (and .Values.readinessGate.enabled true) }}
{{- end }}
{{- end }}

{{/*
RBAC of the readiness gate: the agent reads and patches its own pod's status (the condition) and creates and
updates its transition Events (core/v1, the group the agent writes them through; a repeat bumps the existing
Event's count with a patch). Nothing else: no list or watch, no other resource. Pod names are generated, so a
Role cannot narrow this to one pod.
*/}}
{{- define "readiness-agent.rbac" -}}
{{- $sa := include "readiness-agent.serviceAccountName" . }}
{{- if include "readiness-agent.createServiceAccount" . }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $sa }}
  labels:
    {{- include "readiness-agent.agentLabels" . | nindent 4 }}
  {{- with .Values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
# No token for every container of the pod by default: the agent mounts its own (readinessGate.enabled).
automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
{{- end }}
{{- if include "readiness-agent.createRbac" . }}
{{- if not $sa }}
{{- fail "rbac.create needs serviceAccount.create or serviceAccount.name (the subject of the RoleBinding)" }}
{{- end }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ include "readiness-agent.agentName" . }}
  labels:
    {{- include "readiness-agent.agentLabels" . | nindent 4 }}
rules:
  - apiGroups: [""]
    resources: ["pods/status"]
    verbs: ["get", "patch"]
  - apiGroups: [""]
    resources: ["events"]
    verbs: ["create", "patch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ include "readiness-agent.agentName" . }}
  labels:
    {{- include "readiness-agent.agentLabels" . | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ include "readiness-agent.agentName" . }}
subjects:
  - kind: ServiceAccount
    name: {{ $sa }}
    namespace: {{ .Release.Namespace }}
{{- if .Values.rbac.restrictToOwnPod }}
{{- include "readiness-agent.ownPodPolicy" (dict "ctx" . "sa" $sa) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
rbac.restrictToOwnPod: the Role lets the account patch the status of any pod of the namespace and write Events
about any of them (a Role cannot name generated pod names). This ValidatingAdmissionPolicy narrows the account's
writes to the pod its token is bound to: a kubelet-projected token carries the pod's name and uid in the user's
extra (authentication.kubernetes.io/pod-name, pod-uid). Another pod's status, Events about another pod, and a
token bound to no pod are denied with reason Forbidden (HTTP 403, which the agent counts as forbidden and the
KubeGateWriteFailing alert names); without `reason` a denial would be 422 Invalid. Reads are not admission
requests: the account can still get any pod's status. Cluster-scoped objects (installing needs rights to create
them); GA in Kubernetes 1.30, so the render refuses older clusters.
*/}}
{{- define "readiness-agent.ownPodPolicy" -}}
{{- $ := .ctx }}
{{- if not (or ($.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy") (semverCompare ">=1.30.0-0" $.Capabilities.KubeVersion.Version)) }}
{{- fail (printf "rbac.restrictToOwnPod: ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1) is GA from Kubernetes 1.30; this is %s" $.Capabilities.KubeVersion.Version) }}
{{- end }}
{{- $name := printf "%s.%s" (include "readiness-agent.agentName" $) $.Release.Namespace }}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: {{ $name }}
  labels:
    {{- include "readiness-agent.agentLabels" $ | nindent 4 }}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: ["UPDATE"]
        resources: ["pods/status"]
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: ["CREATE", "UPDATE"]
        resources: ["events"]
  matchConditions:
    - name: the-agents-account
      expression: request.userInfo.username == "system:serviceaccount:{{ $.Release.Namespace }}:{{ .sa }}"
  variables:
    - name: extra
      expression: "has(request.userInfo.extra) ? request.userInfo.extra : {}"
    - name: podName
      expression: "'authentication.kubernetes.io/pod-name' in variables.extra ? variables.extra['authentication.kubernetes.io/pod-name'][0] : ''"
    - name: podUID
      expression: "'authentication.kubernetes.io/pod-uid' in variables.extra ? variables.extra['authentication.kubernetes.io/pod-uid'][0] : ''"
    - name: isPod
      expression: "request.resource.resource == 'pods'"
  validations:
    - expression: "variables.podName != '' && variables.podUID != ''"
      reason: Forbidden
      message: "readiness-agent: this token is bound to no pod; use the kubelet-projected service account token"
    - expression: >-
        variables.isPod ? (object.metadata.name == variables.podName && object.metadata.uid == variables.podUID)
        : (object.involvedObject.kind == 'Pod' && object.involvedObject.name == variables.podName
        && object.involvedObject.uid == variables.podUID)
      reason: Forbidden
      messageExpression: "'readiness-agent: may write only the status of, and Events about, its own pod ' + variables.podName"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: {{ $name }}
  labels:
    {{- include "readiness-agent.agentLabels" $ | nindent 4 }}
spec:
  policyName: {{ $name }}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels:
        kubernetes.io/metadata.name: {{ $.Release.Namespace }}
{{- end }}
