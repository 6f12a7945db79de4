{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "lethe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects. The StatefulSet's pod names
(<fullname>-<ordinal>) and DNS names (<pod>.<fullname>-raft) derive from it.
*/}}
{{- define "lethe.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lethe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object. No version label on selectors (they are immutable).
*/}}
{{- define "lethe.labels" -}}
helm.sh/chart: {{ include "lethe.chart" . }}
{{ include "lethe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lethe
{{- end }}

{{- define "lethe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lethe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lethe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lethe.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Headless Service that gives each replica a stable DNS name for Raft. */}}
{{- define "lethe.raftServiceName" -}}
{{- printf "%s-raft" (include "lethe.fullname" .) }}
{{- end }}

{{- define "lethe.raftSecretName" -}}
{{- default (printf "%s-raft" (include "lethe.fullname" .)) .Values.raft.existingSecret }}
{{- end }}

{{- define "lethe.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The Raft password the chart manages (only when raft.existingSecret is empty):
raft.password if given; else the password already stored in the release's
Secret (lookup: `helm upgrade` keeps it); else 32 new random characters.
`helm template` cannot look anything up, so it generates a fresh one each time:
render raw manifests with raft.existingSecret instead (scripts/render-manifests.sh).
*/}}
{{- define "lethe.raftPassword" -}}
{{- if .Values.raft.password }}
{{- .Values.raft.password }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "lethe.raftSecretName" .) }}
{{- if and $existing $existing.data (hasKey $existing.data "password") }}
{{- index $existing.data "password" | b64dec }}
{{- else }}
{{- randAlphaNum 32 }}
{{- end }}
{{- end }}
{{- end }}

{{/*
LETHE_ALLOWED_ROOTS: config.allowedRoots, or the NFS mount path when an NFS
volume is configured.
*/}}
{{- define "lethe.allowedRoots" -}}
{{- if .Values.config.allowedRoots }}
{{- join "," .Values.config.allowedRoots }}
{{- else if include "lethe.nfsEnabled" . }}
{{- .Values.nfs.mountPath }}
{{- end }}
{{- end }}

{{/* Non-empty when an NFS volume is configured. */}}
{{- define "lethe.nfsEnabled" -}}
{{- if or .Values.nfs.existingClaim (and .Values.nfs.server .Values.nfs.path) }}true{{- end }}
{{- end }}

{{/* LETHE_NAMESPACE_ROOTS: "ns=/path,ns2=/path2", sorted by namespace. */}}
{{- define "lethe.namespaceRoots" -}}
{{- $pairs := list }}
{{- range $ns, $path := .Values.config.namespaceRoots }}
{{- $pairs = append $pairs (printf "%s=%s" $ns $path) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/*
The rules the operator needs on namespaced resources (docs/security.md has
the reason for each). One rule per API group and verb set, so that each can
be removed and tested on its own.
*/}}
{{- define "lethe.namespacedRules" -}}
# Watch both kinds into every replica's inventory (an initial LIST, then kopf's
# watch). Nothing else on the objects themselves: event handlers write nothing.
- apiGroups: ["lethe.io"]
  resources: ["retentionpolicies", "cleanupjobs"]
  verbs: ["list", "watch"]
# Conditions, lastRun, CleanupJob progress: merge patches of the status only.
- apiGroups: ["lethe.io"]
  resources: ["retentionpolicies/status", "cleanupjobs/status"]
  verbs: ["patch"]
# ttlSecondsAfterFinished on CleanupJobs.
- apiGroups: ["lethe.io"]
  resources: ["cleanupjobs"]
  verbs: ["delete"]
# S3 credentialsSecretRef: read one named Secret; never list or watch Secrets.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# Events about runs and brakes (core/v1, each created anew).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* kopf discovers the served versions of its resources through the CRDs. */}}
{{- define "lethe.clusterRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if .Values.config.watchNamespaces }}
# Watching listed namespaces, kopf lists and watches Namespaces to learn which
# exist; without it every start retries the 403 nine times at ERROR (about a
# minute) before falling back. Names only: no objects inside them.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- end }}
