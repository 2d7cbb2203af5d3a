{{/*
Names follow ops/k8s: every object of a region is named <region>-geodb...,
which is what files/render-config.sh resolves for the other nodes.
*/}}
{{- define "geodb.fullname" -}}
{{- printf "%s-%s" .Values.region .Chart.Name | trunc 55 | trimSuffix "-" -}}
{{- end -}}

{{/* The entry of .Values.regions for this release's region. */}}
{{- define "geodb.thisRegion" -}}
{{- $found := dict -}}
{{- range .Values.regions -}}
{{- if eq .name $.Values.region -}}
{{- $found = . -}}
{{- end -}}
{{- end -}}
{{- if not $found -}}
{{- fail (printf "region %q is not in regions" .Values.region) -}}
{{- end -}}
{{- toJson $found -}}
{{- end -}}

{{/* Labels that select this region's pods. */}}
{{- define "geodb.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ include "geodb.fullname" . }}
geodb-region: {{ .Values.region }}
{{- end -}}

{{- define "geodb.labels" -}}
{{ include "geodb.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
