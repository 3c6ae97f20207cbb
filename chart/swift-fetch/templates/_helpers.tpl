{{/* Names are capped at 63 characters: they end up in DNS labels. */}}
{{- define "swift-fetch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "swift-fetch.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "swift-fetch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "swift-fetch.labels" -}}
helm.sh/chart: {{ include "swift-fetch.chart" . }}
{{ include "swift-fetch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "swift-fetch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "swift-fetch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "swift-fetch.daemonSelectorLabels" -}}
{{ include "swift-fetch.selectorLabels" . }}
app.kubernetes.io/component: daemon
{{- end }}

{{- define "swift-fetch.inferenceSelectorLabels" -}}
{{ include "swift-fetch.selectorLabels" . }}
app.kubernetes.io/component: inference
{{- end }}

{{- define "swift-fetch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "swift-fetch.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "swift-fetch.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The headless Service is both the peers' discovery name and the metrics target. */}}
{{- define "swift-fetch.peersServiceName" -}}
{{- printf "%s-peers" (include "swift-fetch.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "swift-fetch.peersDNS" -}}
{{- printf "%s.%s.svc.%s" (include "swift-fetch.peersServiceName" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{- define "swift-fetch.peerTokenSecretName" -}}
{{- default (printf "%s-peer-token" (include "swift-fetch.fullname" .)) .Values.peers.token.existingSecret }}
{{- end }}

{{- define "swift-fetch.listen" -}}
{{- printf "%s:%d" .Values.daemon.listenHost (int .Values.daemon.port) }}
{{- end }}

{{/* Port at which a pod on the same node reaches that node's daemon through status.hostIP. */}}
{{- define "swift-fetch.nodeDaemonPort" -}}
{{- if .Values.daemon.hostNetwork }}
{{- int .Values.daemon.port }}
{{- else if .Values.daemon.hostPort }}
{{- int .Values.daemon.hostPort }}
{{- end }}
{{- end }}

{{/* Fixed paths inside the containers; the config file points at them. */}}
{{- define "swift-fetch.paths" -}}
configDir: /etc/swift-fetch
configFile: /etc/swift-fetch/config.yaml
modelsDir: /etc/swift-fetch/models
modelsFile: /etc/swift-fetch/models/models.yaml
peerTokenDir: /etc/swift-fetch/peer-token
peerTokenFile: /etc/swift-fetch/peer-token/token
store: /var/lib/swift-fetch/store
state: /var/lib/swift-fetch/state
imports: /var/lib/swift-fetch/imports
{{- end }}

{{/*
The store volume source, shared by the daemon (read-write) and the inference pods (read-only) so
both see the same files. Call with the root context.
*/}}
{{- define "swift-fetch.storeVolume" -}}
{{- $s := .Values.storage.store }}
{{- if eq $s.type "pvc" }}
persistentVolumeClaim:
  claimName: {{ required "storage.store.existingClaim is required when storage.store.type=pvc" $s.existingClaim }}
{{- else }}
hostPath:
  path: {{ $s.hostPath.path }}
  type: {{ $s.hostPath.type }}
{{- end }}
{{- end }}

{{- define "swift-fetch.hubEnv" -}}
{{- with .Values.hub.huggingface }}
{{- if .endpoint }}
- name: HF_ENDPOINT
  value: {{ .endpoint | quote }}
{{- end }}
{{- if .token.secretName }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .token.secretName }}
      key: {{ .token.secretKey }}
      optional: {{ .token.optional }}
{{- end }}
{{- end }}
{{- with .Values.hub.modelscope }}
{{- if .endpoint }}
- name: MODELSCOPE_ENDPOINT
  value: {{ .endpoint | quote }}
{{- end }}
{{- if .token.secretName }}
- name: MODELSCOPE_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .token.secretName }}
      key: {{ .token.secretKey }}
      optional: {{ .token.optional }}
{{- end }}
{{- end }}
{{- with .Values.proxy }}
{{- if .httpsProxy }}
- name: HTTPS_PROXY
  value: {{ .httpsProxy | quote }}
{{- end }}
{{- if .httpProxy }}
- name: HTTP_PROXY
  value: {{ .httpProxy | quote }}
{{- end }}
{{- if and .noProxy (or .httpsProxy .httpProxy) }}
- name: NO_PROXY
  value: {{ .noProxy | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* The daemon's config file (camelCase keys, see the design's daemon section). */}}
{{- define "swift-fetch.daemonConfig" -}}
{{- $p := include "swift-fetch.paths" . | fromYaml }}
{{- $d := .Values.daemon }}
{{- $config := dict
  "store" $p.store
  "stateDir" $p.state
  "listen" (include "swift-fetch.listen" .)
  "models" list
  "modelsFile" $p.modelsFile
  "connections" (int $d.connections)
  "chunkSize" $d.chunkSize
  "imports" $p.imports
  "logLevel" $d.logLevel
}}
{{- if $d.maxRate }}
{{- $_ := set $config "maxRate" (toString $d.maxRate) }}
{{- end }}
{{- if $d.gc.maxBytes }}
{{- $_ := set $config "gc" (dict "maxBytes" (toString $d.gc.maxBytes)) }}
{{- end }}
{{- if .Values.peers.enabled }}
{{- $peers := dict
  "static" (.Values.peers.static | default list)
  "dns" (include "swift-fetch.peersDNS" .)
  "port" (int $d.port)
  "tokenFile" $p.peerTokenFile
  "uploadConcurrency" (int .Values.peers.uploadConcurrency)
}}
{{- if .Values.peers.uploadMaxRate }}
{{- $_ := set $peers "uploadMaxRate" (toString .Values.peers.uploadMaxRate) }}
{{- end }}
{{- $_ := set $config "peers" $peers }}
{{- end }}
{{- if .Values.kubernetes.enabled }}
{{- $_ := set $config "kubernetes" (dict "enabled" true) }}
{{- end }}
{{- toYaml $config }}
{{- end }}
