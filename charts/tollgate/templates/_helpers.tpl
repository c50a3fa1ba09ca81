{{/*
Chart name (nameOverride wins), DNS-label sized.
*/}}
{{- define "tollgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every resource name: fullnameOverride, else the release name when it
already contains the chart name, else "<release>-<chart>". Truncated to 50 so
"<fullname>-webhook-tls" and friends stay valid DNS labels.
*/}}
{{- define "tollgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tollgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels every object carries.
*/}}
{{- define "tollgate.labels" -}}
helm.sh/chart: {{ include "tollgate.chart" . }}
{{ include "tollgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: tollgate
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that select the controller pods (Deployment, Services, PDB,
anti-affinity, NetworkPolicy). Never change them: a Deployment's selector is
immutable.
*/}}
{{- define "tollgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tollgate.name" . }}-controller
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tollgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tollgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Service the sidecars connect to (push, 9443) and Prometheus scrapes (metrics).
*/}}
{{- define "tollgate.pushServiceName" -}}
{{- include "tollgate.fullname" . }}
{{- end }}

{{- define "tollgate.webhookServiceName" -}}
{{- include "tollgate.fullname" . }}-webhook
{{- end }}

{{- define "tollgate.webhookSecretName" -}}
{{- include "tollgate.fullname" . }}-webhook-tls
{{- end }}

{{- define "tollgate.webhookCertificateName" -}}
{{- include "tollgate.fullname" . }}-webhook
{{- end }}

{{/*
The Lease that elects the status writer; the Role grants get/update on this
name only.
*/}}
{{- define "tollgate.leaseName" -}}
{{- include "tollgate.fullname" . }}-controller
{{- end }}

{{/*
Namespaces the webhook never injects: webhook.excludeNamespaces plus the
release namespace, de-duplicated, as a YAML flow list.
*/}}
{{- define "tollgate.excludedNamespaces" -}}
{{- $ns := list }}
{{- range .Values.webhook.excludeNamespaces }}{{ $ns = append $ns . }}{{ end }}
{{- $ns = append $ns .Release.Namespace }}
{{- toJson (uniq $ns) }}
{{- end }}

{{/*
An image reference from repository, tag and digest: the digest wins.
*/}}
{{- define "tollgate.imageRef" -}}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository .tag }}
{{- end }}
{{- end }}

{{- define "tollgate.image" -}}
{{- include "tollgate.imageRef" (dict "repository" .Values.image.repository "tag" (default .Chart.AppVersion .Values.image.tag) "digest" .Values.image.digest) }}
{{- end }}

{{/*
The injected sidecar's image: the controller's own image unless a
sidecar.image field is set; then repository (default image.repository), tag
(default the appVersion) and digest (default none) come from sidecar.image.
*/}}
{{- define "tollgate.sidecarImage" -}}
{{- $s := .Values.sidecar.image }}
{{- if or $s.repository $s.tag $s.digest }}
{{- include "tollgate.imageRef" (dict "repository" (default .Values.image.repository $s.repository) "tag" (default .Chart.AppVersion $s.tag) "digest" $s.digest) }}
{{- else }}
{{- include "tollgate.image" . }}
{{- end }}
{{- end }}

{{/*
clientConfig of one webhook: the Service by default, webhook.url when set.
Call with (dict "root" $ "path" "/mutate/pod"). No caBundle: the controller
(or cert-manager's CA injector) writes it, and a chart that rendered one would
make `helm upgrade` wipe it.
*/}}
{{- define "tollgate.webhookClientConfig" -}}
{{- if .root.Values.webhook.url }}
url: {{ printf "%s%s" (trimSuffix "/" .root.Values.webhook.url) .path | quote }}
{{- else }}
service:
  name: {{ include "tollgate.webhookServiceName" .root }}
  namespace: {{ .root.Release.Namespace }}
  path: {{ .path }}
  port: 443
{{- end }}
{{- end }}

{{/*
The Redis that shared budgets live in: redis.url, else the chart's own
(redis.enabled), else none ("").
*/}}
{{- define "tollgate.redisName" -}}
{{- include "tollgate.fullname" . }}-redis
{{- end }}

{{- define "tollgate.redisUrl" -}}
{{- if .Values.redis.url }}
{{- .Values.redis.url }}
{{- else if .Values.redis.enabled }}
{{- printf "redis://%s.%s.svc:6379/0" (include "tollgate.redisName" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/*
Labels of the chart's Redis; redisSelectorLabels select its pods.
*/}}
{{- define "tollgate.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "tollgate.name" . }}-redis
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tollgate.redisLabels" -}}
helm.sh/chart: {{ include "tollgate.chart" . }}
{{ include "tollgate.redisSelectorLabels" . }}
app.kubernetes.io/component: redis
app.kubernetes.io/part-of: tollgate
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
