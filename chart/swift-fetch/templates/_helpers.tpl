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

{{- define "swift-fetch.apiTokenSecretName" -}}
{{- default (printf "%s-api-token" (include "swift-fetch.fullname" .)) .Values.api.token.existingSecret }}
{{- end }}

{{/* The daemons' TLS Secret: cert-manager's (when an issuer is named) or one the user made. */}}
{{- define "swift-fetch.tlsSecretName" -}}
{{- if .Values.tls.certManager.issuerRef.name }}
{{- printf "%s-tls" (include "swift-fetch.fullname" .) }}
{{- else }}
{{- required "tls.enabled needs tls.existingSecret or tls.certManager.issuerRef.name" .Values.tls.existingSecret }}
{{- end }}
{{- end }}

{{/* http or https: how everything reaches the daemons' port. */}}
{{- define "swift-fetch.scheme" -}}
{{- ternary "https" "http" .Values.tls.enabled }}
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
lockDir: /etc/swift-fetch/lock
lockFile: /etc/swift-fetch/lock/swift-fetch.lock
peerTokenDir: /etc/swift-fetch/peer-token
peerTokenFile: /etc/swift-fetch/peer-token/token
apiTokenDir: /etc/swift-fetch/api-token
apiTokenFile: /etc/swift-fetch/api-token/token
tlsDir: /etc/swift-fetch/tls
tlsCertFile: /etc/swift-fetch/tls/tls.crt
tlsKeyFile: /etc/swift-fetch/tls/tls.key
tlsCaFile: /etc/swift-fetch/tls/ca.crt
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

{{/*
The AWS variables the daemon's s3:// pulls, replicas and backups read (src/s3/settings.ts).
*/}}
{{- define "swift-fetch.awsEnv" -}}
{{- with .Values.objectStorage }}
{{- if .region }}
- name: AWS_REGION
  value: {{ .region | quote }}
{{- end }}
{{- if .endpoint }}
- name: AWS_ENDPOINT_URL_S3
  value: {{ .endpoint | quote }}
{{- end }}
{{- with .credentials }}
{{- if .secretName }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .secretAccessKeyKey }}
{{- end }}
{{- end }}
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
{{- if .Values.lock.file }}
{{- $_ := set $config "lockFile" $p.lockFile }}
{{- if .Values.lock.locked }}
{{- $_ := set $config "locked" true }}
{{- end }}
{{- else if .Values.lock.locked }}
{{- fail "lock.locked needs lock.file: give the lock with --set-file lock.file=swift-fetch.lock" }}
{{- end }}
{{- if $d.gc.maxBytes }}
{{- $_ := set $config "gc" (dict "maxBytes" (toString $d.gc.maxBytes)) }}
{{- end }}
{{- /* Inference pods in mode mirror download through their node's daemon: they need the mirror on. */}}
{{- if or $d.mirror.enabled (and .Values.inference.enabled (eq .Values.inference.mode "mirror")) }}
{{- $_ := set $config "mirror" (ternary (dict "allow" $d.mirror.allow) true (gt (len ($d.mirror.allow | default list)) 0)) }}
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
{{- with .Values.objectStorage }}
{{- if .replicas }}
{{- $_ := set $config "replicas" .replicas }}
{{- end }}
{{- if .backup.to }}
{{- $backup := dict "to" .backup.to }}
{{- if .backup.models }}
{{- $_ := set $backup "models" .backup.models }}
{{- end }}
{{- $_ := set $config "backup" $backup }}
{{- end }}
{{- end }}
{{- $_ := set $config "api" (dict
  "tokenFile" $p.apiTokenFile
  "protectReads" .Values.api.protectReads
  "maxRequested" (int .Values.api.maxRequested)
  "requestsPerMinute" (int .Values.api.requestsPerMinute)
) }}
{{- if .Values.tls.enabled }}
{{- $_ := set $config "tls" (dict "certFile" $p.tlsCertFile "keyFile" $p.tlsKeyFile) }}
{{- if .Values.peers.enabled }}
{{- /* Peers are reached by pod IP: their certificate is checked for the peers Service's name (peers.dns). */}}
{{- $_ := set $config.peers "caFile" $p.tlsCaFile }}
{{- end }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
A model ref parsed as the daemon parses it (src/core/ref.ts parseRef): `hf://` (or `huggingface://`),
`ms://` (or `modelscope://`), a bare ORG/NAME meaning ModelScope, an optional @REVISION defaulting to
main (hf) / master (ms). Call with the ref string; returns YAML {hub, org, name, revision,
explicitRevision, key}, key being the canonical `HUB://ORG/NAME@REVISION`.
*/}}
{{- define "swift-fetch.parseRef" -}}
{{- $raw := trim . }}
{{- $hub := "ms" }}
{{- $rest := $raw }}
{{- if regexMatch "^[a-z]+://" $raw }}
{{- $scheme := regexReplaceAll "://.*$" $raw "" }}
{{- $rest = regexReplaceAll "^[a-z]+://" $raw "" }}
{{- if has $scheme (list "hf" "huggingface") }}
{{- $hub = "hf" }}
{{- else if not (has $scheme (list "ms" "modelscope")) }}
{{- fail (printf "model ref %q: unknown scheme %s:// (use hf:// or ms://)" $raw $scheme) }}
{{- end }}
{{- end }}
{{- $rev := "" }}
{{- if contains "@" $rest }}
{{- $rev = regexReplaceAll "^[^@]*@" $rest "" }}
{{- $rest = regexReplaceAll "@.*$" $rest "" }}
{{- end }}
{{- $parts := splitList "/" $rest }}
{{- if or (ne (len $parts) 2) (not (regexMatch "^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$" $rest)) }}
{{- fail (printf "model ref %q: expected ORG/NAME" $raw) }}
{{- end }}
{{- $explicit := ne $rev "" }}
{{- if not $explicit }}
{{- $rev = ternary "main" "master" (eq $hub "hf") }}
{{- end }}
hub: {{ $hub }}
org: {{ index $parts 0 | quote }}
name: {{ index $parts 1 | quote }}
revision: {{ $rev | quote }}
explicitRevision: {{ $explicit }}
key: {{ printf "%s://%s/%s@%s" $hub (index $parts 0) (index $parts 1) $rev | quote }}
{{- end }}

{{/*
The node label the daemon sets once a model is verified on its node (Kubernetes integration):
models.swift-fetch.io/<first 16 hex of sha256(canonical key)>. Call with the ref string.
*/}}
{{- define "swift-fetch.modelLabel" -}}
{{- $ref := include "swift-fetch.parseRef" . | fromYaml }}
{{- printf "models.swift-fetch.io/%s" (trunc 16 (sha256sum $ref.key)) }}
{{- end }}

{{/* The inference accelerator's settings (resource name after gpuResource, node selector, tolerations). */}}
{{- define "swift-fetch.accelerator" -}}
{{- $i := .Values.inference }}
{{- $a := index $i.accelerators $i.accelerator }}
{{- $resource := $a.resource }}
{{- if and $i.gpuResource (ne $i.accelerator "cpu") }}
{{- $resource = $i.gpuResource }}
{{- end }}
resource: {{ $resource | quote }}
count: {{ ternary 0 (int $i.gpus) (eq $i.accelerator "cpu") }}
nodeSelector:
  {{- merge (deepCopy ($i.nodeSelector | default dict)) ($a.nodeSelector | default dict) | toYaml | nindent 2 }}
tolerations:
  {{- concat ($a.tolerations | default list) ($i.tolerations | default list) | toYaml | nindent 2 }}
{{- end }}

{{/*
`swift deploy` arguments the chart derives from the values: backend, tensor parallel size for the
backends that take one, served model name; extraArgs come after them.
*/}}
{{- define "swift-fetch.deployArgs" -}}
{{- $i := .Values.inference }}
{{- $args := list "--infer_backend" $i.inferBackend }}
{{- $tp := int (default $i.gpus $i.tensorParallelSize) }}
{{- if ne $i.accelerator "cpu" }}
{{- $flag := get (dict "vllm" "--vllm_tensor_parallel_size" "sglang" "--sglang_tp_size" "lmdeploy" "--lmdeploy_tp") $i.inferBackend }}
{{- if $flag }}
{{- $args = concat $args (list $flag (toString $tp)) }}
{{- end }}
{{- end }}
{{- with $i.servedModelName }}
{{- $args = concat $args (list "--served_model_name" .) }}
{{- end }}
{{- toYaml (concat $args ($i.extraArgs | default list)) }}
{{- end }}

{{/* Node affinity of inference pods: the user's, plus the placement on nodes labelled with the model (mode init). */}}
{{- define "swift-fetch.inferenceAffinity" -}}
{{- $i := .Values.inference }}
{{- $aff := deepCopy ($i.affinity | default dict) }}
{{- if and (eq $i.mode "init") (ne $i.placement "none") }}
{{- $expr := dict "key" (include "swift-fetch.modelLabel" $i.model) "operator" "In" "values" (list "ready") }}
{{- $na := $aff.nodeAffinity | default dict }}
{{- if eq $i.placement "required" }}
{{- $req := $na.requiredDuringSchedulingIgnoredDuringExecution | default dict }}
{{- /* nodeSelectorTerms are ORed: the label must be in every one of them. */}}
{{- $terms := list }}
{{- range ($req.nodeSelectorTerms | default (list dict)) }}
{{- $terms = append $terms (set (deepCopy .) "matchExpressions" (append (.matchExpressions | default list) $expr)) }}
{{- end }}
{{- $_ := set $req "nodeSelectorTerms" $terms }}
{{- $_ := set $na "requiredDuringSchedulingIgnoredDuringExecution" $req }}
{{- else }}
{{- $pref := append ($na.preferredDuringSchedulingIgnoredDuringExecution | default list) (dict "weight" 100 "preference" (dict "matchExpressions" (list $expr))) }}
{{- $_ := set $na "preferredDuringSchedulingIgnoredDuringExecution" $pref }}
{{- end }}
{{- $_ := set $aff "nodeAffinity" $na }}
{{- end }}
{{- if $aff }}
{{- toYaml $aff }}
{{- end }}
{{- end }}
