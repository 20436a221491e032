{{/*
Names, labels, and the environment every process shares.

Environment names: only AVAILABILITY_* (infra/config.py Settings), and never one that
Faust reads on its own. Faust (faust-streaming) reads unprefixed variables such as
WEB_PORT, WEB_HOST, BROKER_URL, APP_DATADIR, TOPIC_REPLICATION_FACTOR, F_DATADIR,
FAUST_DATADIR and FAUST_LOOP, and they win over the worker's code. Kubernetes' service
links would add <SERVICE>_PORT and friends for every Service in the namespace (a
Service named "web" gives WEB_PORT=tcp://10.0.0.1:80, which stops a worker at
start), so every pod sets enableServiceLinks: false, and extraEnv must not name them.
*/}}

{{- define "availability.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "availability.fullname" -}}
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

{{/* A component's resource name: availability.component (dict "ctx" $ "component" "worker") */}}
{{- define "availability.component" -}}
{{- printf "%s-%s" (include "availability.fullname" .ctx | trunc 50 | trimSuffix "-") .component }}
{{- end }}

{{- define "availability.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "availability.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "availability.selectorLabels" -}}
app.kubernetes.io/name: {{ include "availability.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: (dict "ctx" $ "component" "worker") */}}
{{- define "availability.componentLabels" -}}
{{ include "availability.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "availability.componentSelector" -}}
{{ include "availability.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "availability.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "availability.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "availability.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Secret names: the existing one when given, else the chart's. */}}
{{- define "availability.redisSecret" -}}
{{- default (include "availability.fullname" .) .Values.redis.existingSecret }}
{{- end }}
{{- define "availability.redisSecretKey" -}}
{{- ternary .Values.redis.existingSecretKey "redis-url" (ne .Values.redis.existingSecret "") }}
{{- end }}
{{- define "availability.kafkaSaslSecret" -}}
{{- default (include "availability.fullname" .) .Values.kafka.sasl.existingSecret }}
{{- end }}
{{- define "availability.kafkaSaslSecretKey" -}}
{{- ternary .Values.kafka.sasl.existingSecretPasswordKey "kafka-sasl-password" (ne .Values.kafka.sasl.existingSecret "") }}
{{- end }}
{{- define "availability.kafkaSasl" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}true{{ end }}
{{- end }}
{{- define "availability.kafkaTls" -}}
{{- if and (has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL")) .Values.kafka.tls.existingSecret }}true{{ end }}
{{- end }}
{{- define "availability.apiKeysSecret" -}}
{{- default (include "availability.fullname" .) .Values.auth.apiKeys.existingSecret }}
{{- end }}
{{- define "availability.apiKeysSecretKey" -}}
{{- ternary .Values.auth.apiKeys.existingSecretKey "api-keys.json" (ne .Values.auth.apiKeys.existingSecret "") }}
{{- end }}
{{- define "availability.apiKeys" -}}
{{- if or .Values.auth.apiKeys.keys .Values.auth.apiKeys.existingSecret }}true{{ end }}
{{- end }}
{{- define "availability.operatorSecret" -}}
{{- default (include "availability.fullname" .) .Values.auth.operatorToken.existingSecret }}
{{- end }}
{{- define "availability.operatorSecretKey" -}}
{{- ternary .Values.auth.operatorToken.existingSecretKey "operator-token" (ne .Values.auth.operatorToken.existingSecret "") }}
{{- end }}
{{- define "availability.shopifySecret" -}}
{{- default (printf "%s-shopify" (include "availability.fullname" .)) .Values.shopify.existingSecret }}
{{- end }}

{{/* A setting's value as an environment string: JSON for lists and maps, whole
numbers without an exponent. */}}
{{- define "availability.envValue" -}}
{{- if or (kindIs "map" .) (kindIs "slice" .) }}
{{- toJson . }}
{{- else if and (kindIs "float64" .) (eq (floor .) .) }}
{{- int64 . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/* AVAILABILITY_SHOPIFY_TARGETS: the targets with their secrets as files. */}}
{{- define "availability.shopifyTargets" -}}
{{- $targets := list }}
{{- range .Values.shopify.targets }}
{{- $target := omit . "webhooks" }}
{{- $_ := set $target "access_token" (dict "file" (printf "/etc/availability/shopify/%s.access_token" .name)) }}
{{- if .webhooks }}
{{- $_ := set $target "client_secret" (dict "file" (printf "/etc/availability/shopify/%s.client_secret" .name)) }}
{{- end }}
{{- $targets = append $targets $target }}
{{- end }}
{{- toJson $targets }}
{{- end }}

{{/*
The settings every process reads (no secrets): a YAML map of name -> string, used as
the ConfigMap's data and, in the pre-install Job (which runs before the ConfigMap
exists), as its env.
*/}}
{{- define "availability.settings" -}}
AVAILABILITY_BROKER: {{ .Values.kafka.brokers | quote }}
AVAILABILITY_KAFKA_SECURITY_PROTOCOL: {{ .Values.kafka.securityProtocol | quote }}
{{- if include "availability.kafkaSasl" . }}
AVAILABILITY_KAFKA_SASL_MECHANISM: {{ .Values.kafka.sasl.mechanism | quote }}
AVAILABILITY_KAFKA_SASL_USERNAME: {{ .Values.kafka.sasl.username | quote }}
AVAILABILITY_KAFKA_SASL_PASSWORD_FILE: /etc/availability/kafka-sasl/password
{{- end }}
{{- if include "availability.kafkaTls" . }}
AVAILABILITY_KAFKA_SSL_CA_FILE: {{ printf "/etc/availability/kafka-tls/%s" .Values.kafka.tls.caKey | quote }}
{{- if .Values.kafka.tls.certKey }}
AVAILABILITY_KAFKA_SSL_CERT_FILE: {{ printf "/etc/availability/kafka-tls/%s" .Values.kafka.tls.certKey | quote }}
AVAILABILITY_KAFKA_SSL_KEY_FILE: {{ printf "/etc/availability/kafka-tls/%s" .Values.kafka.tls.keyKey | quote }}
{{- end }}
{{- end }}
AVAILABILITY_TOPIC_PREFIX: {{ .Values.topics.prefix | quote }}
AVAILABILITY_PARTITIONS: {{ include "availability.envValue" .Values.topics.partitions | quote }}
AVAILABILITY_REPLICATION_FACTOR: {{ include "availability.envValue" .Values.topics.replicationFactor | quote }}
AVAILABILITY_MIN_INSYNC_REPLICAS: {{ include "availability.envValue" .Values.topics.minInsyncReplicas | quote }}
AVAILABILITY_AUDIT_RETENTION_DAYS: {{ include "availability.envValue" .Values.topics.auditRetentionDays | quote }}
AVAILABILITY_REDIS_CLUSTER: {{ .Values.redis.cluster | toString | quote }}
AVAILABILITY_HTTP_PORT: {{ include "availability.envValue" .Values.http.port | quote }}
AVAILABILITY_GRPC_PORT: {{ include "availability.envValue" .Values.grpc.port | quote }}
AVAILABILITY_WORKER_METRICS_PORT: {{ include "availability.envValue" .Values.worker.metricsPort | quote }}
AVAILABILITY_GRPC_METRICS_PORT: {{ include "availability.envValue" .Values.grpc.metricsPort | quote }}
AVAILABILITY_PUSH_METRICS_PORT: {{ include "availability.envValue" .Values.push.metricsPort | quote }}
AVAILABILITY_DATA_DIR: /data
{{- if include "availability.apiKeys" . }}
AVAILABILITY_AUTH_API_KEYS_FILE: /etc/availability/auth/api-keys.json
{{- end }}
{{- if .Values.shopify.targets }}
AVAILABILITY_SHOPIFY_TARGETS: {{ include "availability.shopifyTargets" . | quote }}
{{- end }}
{{- range $name, $value := .Values.config }}
{{ printf "AVAILABILITY_%s" (upper $name) }}: {{ include "availability.envValue" $value | quote }}
{{- end }}
{{- end }}

{{/*
Secrets as environment variables: (dict "ctx" $ "redis" true "operator" false).
Settings that have a *_FILE form are mounted as files instead (availability.volumes).
*/}}
{{- define "availability.secretEnv" -}}
{{- $ := .ctx }}
{{- if .redis }}
- name: AVAILABILITY_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "availability.redisSecret" $ }}
      key: {{ include "availability.redisSecretKey" $ }}
{{- end }}
{{- if and .kafka (include "availability.kafkaTls" $) $.Values.kafka.tls.keyPasswordKey }}
- name: AVAILABILITY_KAFKA_SSL_KEY_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.kafka.tls.existingSecret }}
      key: {{ $.Values.kafka.tls.keyPasswordKey }}
{{- end }}
{{- if and .operator (or $.Values.auth.operatorToken.value $.Values.auth.operatorToken.existingSecret) }}
- name: AVAILABILITY_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "availability.operatorSecret" $ }}
      key: {{ include "availability.operatorSecretKey" $ }}
{{- end }}
{{- with $.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "availability.webhookTargets" -}}
{{- range .Values.shopify.targets }}{{ if .webhooks }}true{{ end }}{{ end }}
{{- end }}

{{/* Volumes: (dict "ctx" $ "kafka" true "apiKeys" true "shopify" "all"|"webhooks"|"" "grpcTls" true) */}}
{{- define "availability.volumes" -}}
{{- $ := .ctx }}
- name: tmp
  emptyDir: {}
{{- if and .kafka (include "availability.kafkaSasl" $) }}
- name: kafka-sasl
  secret:
    secretName: {{ include "availability.kafkaSaslSecret" $ }}
    items:
      - key: {{ include "availability.kafkaSaslSecretKey" $ }}
        path: password
{{- end }}
{{- if and .kafka (include "availability.kafkaTls" $) }}
- name: kafka-tls
  secret:
    secretName: {{ $.Values.kafka.tls.existingSecret }}
{{- end }}
{{- if and .apiKeys (include "availability.apiKeys" $) }}
- name: api-keys
  secret:
    secretName: {{ include "availability.apiKeysSecret" $ }}
    items:
      - key: {{ include "availability.apiKeysSecretKey" $ }}
        path: api-keys.json
{{- end }}
{{- if and (eq .shopify "all") $.Values.shopify.targets }}
- name: shopify
  secret:
    secretName: {{ include "availability.shopifySecret" $ }}
{{- else if and (eq .shopify "webhooks") (include "availability.webhookTargets" $) }}
# Only the client secrets that verify the shops' webhooks: the HTTP API never calls a shop.
- name: shopify
  secret:
    secretName: {{ include "availability.shopifySecret" $ }}
    items:
      {{- range $.Values.shopify.targets }}
      {{- if .webhooks }}
      - key: {{ .name }}.client_secret
        path: {{ .name }}.client_secret
      {{- end }}
      {{- end }}
{{- end }}
{{- if and .grpcTls $.Values.grpc.tls.existingSecret }}
- name: grpc-tls
  secret:
    secretName: {{ $.Values.grpc.tls.existingSecret }}
{{- end }}
{{- with $.Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "availability.volumeMounts" -}}
{{- $ := .ctx }}
- name: tmp
  mountPath: /tmp
{{- if and .kafka (include "availability.kafkaSasl" $) }}
- name: kafka-sasl
  mountPath: /etc/availability/kafka-sasl
  readOnly: true
{{- end }}
{{- if and .kafka (include "availability.kafkaTls" $) }}
- name: kafka-tls
  mountPath: /etc/availability/kafka-tls
  readOnly: true
{{- end }}
{{- if and .apiKeys (include "availability.apiKeys" $) }}
- name: api-keys
  mountPath: /etc/availability/auth
  readOnly: true
{{- end }}
{{- if or (and (eq .shopify "all") $.Values.shopify.targets) (and (eq .shopify "webhooks") (include "availability.webhookTargets" $)) }}
- name: shopify
  mountPath: /etc/availability/shopify
  readOnly: true
{{- end }}
{{- if and .grpcTls $.Values.grpc.tls.existingSecret }}
- name: grpc-tls
  mountPath: /etc/availability/grpc-tls
  readOnly: true
{{- end }}
{{- with $.Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The pod-level fields every process shares: (dict "ctx" $ "component" "worker") */}}
{{- define "availability.podSpec" -}}
{{- $ := .ctx }}
serviceAccountName: {{ include "availability.serviceAccountName" $ }}
automountServiceAccountToken: false
# No <SERVICE>_PORT variables: Faust would read some of them (see _helpers.tpl).
enableServiceLinks: false
securityContext:
  {{- toYaml $.Values.podSecurityContext | nindent 2 }}
{{- with $.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
affinity:
{{- if $.Values.affinity }}
  {{- toYaml $.Values.affinity | nindent 2 }}
{{- else }}
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "availability.componentSelector" . | nindent 14 }}
{{- end }}
{{- end }}

{{/* Pod template metadata: (dict "ctx" $ "component" "worker") */}}
{{- define "availability.podMetadata" -}}
{{- $ := .ctx }}
labels:
  {{- include "availability.componentSelector" . | nindent 2 }}
  {{- with $.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  checksum/config: {{ include "availability.settings" $ | sha256sum }}
  checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") $ | sha256sum }}
  {{- with $.Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* Container fields every process shares. */}}
{{- define "availability.containerBase" -}}
image: {{ include "availability.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.containerSecurityContext | nindent 2 }}
envFrom:
  - configMapRef:
      name: {{ include "availability.fullname" . }}
{{- end }}

{{/* preStop: a delay while the endpoints controller takes the pod out of its Services. */}}
{{- define "availability.lifecycle" -}}
{{- if gt (int .) 0 }}
lifecycle:
  preStop:
    sleep:
      seconds: {{ int . }}
{{- end }}
{{- end }}
