{{/* The chart name (app.kubernetes.io/name). */}}
{{- define "flopwise.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The object name prefix: RELEASE-flopwise, or RELEASE when it already says flopwise. */}}
{{- define "flopwise.fullname" -}}
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

{{/* Selector labels: stable across upgrades (a Deployment's selector is immutable). */}}
{{- define "flopwise.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flopwise.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Standard labels of every object; the component is passed as .component. Usage:
     include "flopwise.labels" (dict "ctx" $ "component" "operator") */}}
{{- define "flopwise.labels" -}}
{{- $ctx := .ctx -}}
helm.sh/chart: {{ printf "%s-%s" $ctx.Chart.Name $ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "flopwise.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: flopwise
{{- end }}

{{- define "flopwise.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flopwise.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The namespaces the operator watches with rbac.scope=namespace, as a list. */}}
{{- define "flopwise.watchNamespaces" -}}
{{- if .Values.watchNamespaces }}
{{- toJson (uniq .Values.watchNamespaces) }}
{{- else }}
{{- toJson (list .Release.Namespace) }}
{{- end }}
{{- end }}

{{- define "flopwise.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* RBAC rules: exactly flopwise.kube.rbac's operator_rules(), scanning_rules() and leader_election_rules()
     (tests/test_chart.py renders the chart and compares, so a change there fails until it is made here). */}}
{{- define "flopwise.operatorRules" -}}
# campaigns: watched (kopf's on.event only: it writes nothing on them), read again after a conflict
- apiGroups: [flopwise.dev]
  resources: [trainingcampaigns]
  verbs: [get, list, watch]
- apiGroups: [flopwise.dev]
  resources: [trainingcampaigns/status]
  verbs: [patch]
# owner references with blockOwnerDeletion need this where OwnerReferencesPermissionEnforcement is on
- apiGroups: [flopwise.dev]
  resources: [trainingcampaigns/finalizers]
  verbs: [update]
# one Job per training run: deleted when a run is cancelled; patched to suspend or resume it (spec.suspend)
# and to lower a preempted one's deadline, read first to see which
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch, delete]
# the runs' Pods: their termination messages carry the results
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# one ConfigMap per run holding its RunSpec (one an earlier attempt left is replaced), and rendezvous Services of
# multi-node (Indexed Job) runs: deleted by spec.cleanup once the run's result is in the status
- apiGroups: [""]
  resources: [configmaps]
  verbs: [list, create, update, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [create, delete]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create]
{{- end }}

{{/* kopf's scanning of namespaces and CRDs as they come and go: --all-namespaces only. */}}
{{- define "flopwise.scanningRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}

{{/* The leader-election Lease, in the release namespace. */}}
{{- define "flopwise.leaderElectionRules" -}}
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, create, update]
{{- end }}
