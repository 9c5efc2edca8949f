{{/* Names ------------------------------------------------------------------------- */}}

{{- define "twin.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "twin.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>"; call with (dict "root" $ "component" "nats"). */}}
{{- define "twin.componentName" -}}
{{- printf "%s-%s" (include "twin.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels ------------------------------------------------------------------------ */}}

{{- define "twin.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "twin.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ai-factory-twin
{{- end -}}

{{/* Selector labels of one component; (dict "root" $ "component" "compute"). */}}
{{- define "twin.selectorLabels" -}}
app.kubernetes.io/name: {{ include "twin.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "twin.componentLabels" -}}
{{ include "twin.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Images ------------------------------------------------------------------------ */}}

{{- define "twin.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion -}}
{{- end -}}

{{- define "twin.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "twin.imageTag" .) -}}
{{- end -}}

{{/* The twin pod's image: the CUDA variant when the what-if GPU is on. */}}
{{- define "twin.whatifImage" -}}
{{- if .Values.whatif.gpu.enabled -}}
{{- printf "%s:%s" .Values.image.repository (.Values.whatif.gpu.tag | default (printf "%s-cuda" (include "twin.imageTag" .))) -}}
{{- else -}}
{{- include "twin.image" . -}}
{{- end -}}
{{- end -}}

{{/* Security: the "restricted" Pod Security Standard for every pod and container. ---- */}}

{{/* (dict "uid" 10001) */}}
{{- define "twin.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "twin.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The image's user (Dockerfile). */}}
{{- define "twin.uid" -}}10001{{- end -}}

{{/* NATS ---------------------------------------------------------------------------- */}}

{{- define "twin.natsInRelease" -}}
{{- if not .Values.externalNats.url -}}true{{- end -}}
{{- end -}}

{{- define "twin.natsUrl" -}}
{{- if .Values.externalNats.url -}}
{{- .Values.externalNats.url -}}
{{- else -}}
{{- printf "%s://%s:4222" (ternary "tls" "nats" .Values.nats.tls.enabled) (include "twin.componentName" (dict "root" . "component" "nats")) -}}
{{- end -}}
{{- end -}}

{{/* The NATS identities (services/bus_permissions.py): one per service, "gateway" and
     "bms" (BMS integrations over MQTT) when gateway.enabled, "telemetry" for external
     MeasurementBatch publishers, "observer" read-only. Each key of the auth Secret is one
     of them: an existingSecret needs the gateway and bms keys only with the gateway. */}}
{{- define "twin.natsIdentities" -}}
{{- $gateway := ternary (list "gateway" "bms") (list) .Values.gateway.enabled -}}
{{- toJson (concat (list "compute" "cooling" "power" "energy" "twin" "historian") $gateway (list "telemetry" "observer")) -}}
{{- end -}}

{{- define "twin.natsAuthSecret" -}}
{{- $auth := .Values.nats.auth -}}
{{- if and (eq $auth.type "nkey") $auth.nkey.existingSecret -}}
{{- $auth.nkey.existingSecret -}}
{{- else if and (eq $auth.type "user") $auth.user.existingSecret -}}
{{- $auth.user.existingSecret -}}
{{- else -}}
{{- include "twin.componentName" (dict "root" . "component" "nats-auth") -}}
{{- end -}}
{{- end -}}

{{/* The nats-server authorization block: one user per identity, allowed exactly the
     subjects of files/nats-permissions.yaml (generated from services/bus_permissions.py).
     Passwords come from nats-server's environment ($TWIN_NATS_PASSWORD_<IDENTITY>, from
     the auth Secret): none is ever written into the ConfigMap. */}}
{{- define "twin.natsAuthorization" -}}
{{- $auth := .Values.nats.auth -}}
{{- $table := .Files.Get "files/nats-permissions.yaml" | replace "<site>" .Values.site.id | fromYaml -}}
authorization {
  users = [
{{- range $identity := include "twin.natsIdentities" . | fromJsonArray }}
{{- $p := index $table $identity }}
{{- $who := printf "user: %q, password: $TWIN_NATS_PASSWORD_%s" $identity (upper $identity) }}
{{- if eq $auth.type "nkey" }}
{{- $key := index $auth.nkey.publicKeys $identity | default "" }}
{{- if and (not $key) (not (has $identity (list "bms" "telemetry" "observer"))) }}
{{- fail (printf "nats.auth.nkey.publicKeys.%s is required with nats.auth.type=nkey" $identity) }}
{{- end }}
{{- $who = ternary (printf "nkey: %s" $key) "" (ne $key "") }}
{{- end }}
{{- if $who }}
    { {{ $who }}, permissions: { publish: {{ include "twin.natsRule" $p.publish }}, subscribe: {{ include "twin.natsRule" $p.subscribe }}{{ if $p.allow_responses }}, allow_responses: true{{ end }} } }
{{- end }}
{{- end }}
  ]
}
{{- end -}}

{{/* An allow list; an empty one would allow everything, so nothing is denied instead. */}}
{{- define "twin.natsRule" -}}
{{- if . -}}
{ allow: [{{ range $i, $s := . }}{{ if $i }}, {{ end }}{{ $s | quote }}{{ end }}] }
{{- else -}}
{ deny: [">"] }
{{- end -}}
{{- end -}}

{{/* What a NATS client (a service) needs: env, mounts, volumes.
     (dict "root" $ "identity" "compute") */}}
{{- define "twin.natsClientEnv" -}}
{{- $auth := .root.Values.nats.auth }}
- name: TWIN_NATS_URL
  value: {{ include "twin.natsUrl" .root | quote }}
{{- if eq $auth.type "user" }}
- name: TWIN_NATS_USER
  value: {{ .identity | quote }}
- name: TWIN_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "twin.natsAuthSecret" .root }}
      key: {{ .identity }}
{{- else if eq $auth.type "nkey" }}
- name: TWIN_NATS_NKEY_SEED_FILE
  value: /etc/twin/nats-nkey/seed
{{- end }}
{{- if .root.Values.nats.tls.enabled }}
- name: TWIN_NATS_TLS_CA_FILE
  value: /etc/twin/nats-tls/ca.crt
{{- if .root.Values.nats.tls.mutual }}
- name: TWIN_NATS_TLS_CERT_FILE
  value: /etc/twin/nats-tls/tls.crt
- name: TWIN_NATS_TLS_KEY_FILE
  value: /etc/twin/nats-tls/tls.key
{{- end }}
{{- end }}
{{- end -}}

{{- define "twin.natsClientMounts" -}}
{{- if eq .Values.nats.auth.type "nkey" }}
- name: nats-nkey
  mountPath: /etc/twin/nats-nkey
  readOnly: true
{{- end }}
{{- if .Values.nats.tls.enabled }}
- name: nats-tls
  mountPath: /etc/twin/nats-tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* (dict "root" $ "identity" "compute"): the identity's own seed only. */}}
{{- define "twin.natsClientVolumes" -}}
{{- $root := .root }}
{{- if eq $root.Values.nats.auth.type "nkey" }}
- name: nats-nkey
  secret:
    secretName: {{ required "nats.auth.nkey.existingSecret is required with nats.auth.type=nkey" $root.Values.nats.auth.nkey.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .identity }}
        path: seed
{{- end }}
{{- if $root.Values.nats.tls.enabled }}
- name: nats-tls
  secret:
    secretName: {{ $root.Values.nats.tls.clientSecretName | default (required "nats.tls.secretName is required with nats.tls.enabled" $root.Values.nats.tls.secretName) }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{/* gRPC TLS ---------------------------------------------------------------------- */}}

{{/* grpc.tls.secretName, else the Secret the chart generates (templates/grpc-tls.yaml). */}}
{{- define "twin.grpcTlsSecret" -}}
{{- .Values.grpc.tls.secretName | default (include "twin.componentName" (dict "root" . "component" "grpc-tls")) -}}
{{- end -}}

{{- define "twin.grpcServerEnv" -}}
{{- if .Values.grpc.tls.enabled }}
- name: TWIN_GRPC_TLS_CERT_FILE
  value: /etc/twin/grpc-tls/tls.crt
- name: TWIN_GRPC_TLS_KEY_FILE
  value: /etc/twin/grpc-tls/tls.key
{{- if .Values.grpc.tls.mutual }}
- name: TWIN_GRPC_TLS_CLIENT_CA_FILE
  value: /etc/twin/grpc-tls/ca.crt
{{- end }}
{{- end }}
{{- end -}}

{{- define "twin.grpcClientEnv" -}}
{{- if .Values.grpc.tls.enabled }}
- name: TWIN_GRPC_TLS_CA_FILE
  value: /etc/twin/grpc-tls/ca.crt
{{- if .Values.grpc.tls.mutual }}
- name: TWIN_GRPC_TLS_CLIENT_CERT_FILE
  value: /etc/twin/grpc-tls/tls.crt
- name: TWIN_GRPC_TLS_CLIENT_KEY_FILE
  value: /etc/twin/grpc-tls/tls.key
{{- end }}
{{- end }}
{{- end -}}

{{- define "twin.grpcTlsMounts" -}}
{{- if .Values.grpc.tls.enabled }}
- name: grpc-tls
  mountPath: /etc/twin/grpc-tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* (dict "root" $ "client" true): the client certificate for the test pod. */}}
{{- define "twin.grpcTlsVolumes" -}}
{{- $tls := .root.Values.grpc.tls -}}
{{- if $tls.enabled }}
{{- $secret := include "twin.grpcTlsSecret" .root }}
- name: grpc-tls
  secret:
    secretName: {{ ternary ($tls.clientSecretName | default $secret) $secret (and .client $tls.mutual) }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{/* Database ---------------------------------------------------------------------- */}}

{{- define "twin.dbInRelease" -}}
{{- if not (or .Values.externalDatabase.url .Values.externalDatabase.existingSecret) -}}true{{- end -}}
{{- end -}}

{{- define "twin.dbSecretName" -}}
{{- .Values.externalDatabase.existingSecret | default (include "twin.componentName" (dict "root" . "component" "database")) -}}
{{- end -}}

{{- define "twin.dbSecretKey" -}}
{{- ternary .Values.externalDatabase.existingSecretKey "url" (ne .Values.externalDatabase.existingSecret "") -}}
{{- end -}}

{{- define "twin.dbEnv" -}}
- name: TWIN_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "twin.dbSecretName" . }}
      key: {{ include "twin.dbSecretKey" . }}
{{- end -}}

{{/* A password kept across upgrades: the existing Secret's value, else the given value,
     else a new random one. (dict "root" $ "secret" NAME "key" KEY "value" VALUE) */}}
{{- define "twin.persistentPassword" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- if .value -}}
{{- .value -}}
{{- else if and $existing (hasKey $existing.data .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum 32 -}}
{{- end -}}
{{- end -}}

{{/* Common pieces of a twin pod ----------------------------------------------------- */}}

{{/* (dict "root" $ "identity" "compute") */}}
{{- define "twin.commonEnv" -}}
- name: TWIN_SITE
  value: {{ .root.Values.site.id | quote }}
{{- /* One id per release: every response names it, calls for another twin are refused. */}}
- name: TWIN_INSTANCE_ID
  value: {{ printf "%s.%s" .root.Release.Namespace .root.Release.Name | trunc 64 | quote }}
- name: TWIN_SCENARIO
  value: /etc/twin/site.yaml
- name: TWIN_LOG_LEVEL
  value: {{ .root.Values.logLevel | quote }}
{{- with (include "twin.natsClientEnv" . | trim) }}
{{ . }}
{{- end }}
{{- end -}}

{{- define "twin.siteChecksum" -}}
{{- include "twin.siteScenario" . | sha256sum -}}
{{- end -}}

{{- define "twin.siteScenario" -}}
{{- .Values.site.scenario | default (.Files.Get "files/fairwater-wi.yaml") -}}
{{- end -}}

{{/* Gateway ------------------------------------------------------------------------ */}}

{{/* The ConfigMap holding the gateway's point map under the key point-map.yaml. */}}
{{- define "twin.gatewayPointMapConfigMap" -}}
{{- $g := .Values.gateway -}}
{{- if and $g.pointMap $g.existingConfigMap -}}
{{- fail "gateway: set gateway.pointMap or gateway.existingConfigMap, not both" -}}
{{- end -}}
{{- if not (or $g.pointMap $g.existingConfigMap) -}}
{{- fail "gateway.pointMap (the point map, YAML) or gateway.existingConfigMap is required with gateway.enabled" -}}
{{- end -}}
{{- $g.existingConfigMap | default (include "twin.componentName" (dict "root" . "component" "gateway-point-map")) -}}
{{- end -}}
