{{/*
Names and labels.
*/}}
{{- define "podswitch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "podswitch.fullname" -}}
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

{{- define "podswitch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "podswitch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "podswitch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "podswitch.labels" -}}
helm.sh/chart: {{ include "podswitch.chart" . }}
{{ include "podswitch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: podswitch
{{- end -}}

{{- define "podswitch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "podswitch.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "podswitch.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The control socket: fixed by the product's contract (DESIGN.md). */}}
{{- define "podswitch.socket" -}}/run/podswitch/switchd.sock{{- end -}}

{{/*
A trunk list as JSON, checked beyond what the schema can say (minID <= maxID).
Input: dict "trunk" LIST "path" "values.path".
*/}}
{{- define "podswitch.trunk" -}}
{{- $out := list -}}
{{- range $i, $e := .trunk -}}
{{- if hasKey $e "id" -}}
{{- $out = append $out (dict "id" (int $e.id)) -}}
{{- else -}}
{{- if gt (int $e.minID) (int $e.maxID) -}}
{{- fail (printf "%s[%d]: minID %d is greater than maxID %d" $.path $i (int $e.minID) (int $e.maxID)) -}}
{{- end -}}
{{- $out = append $out (dict "minID" (int $e.minID) "maxID" (int $e.maxID)) -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* The default network's IPAM object as JSON. */}}
{{- define "podswitch.ipam" -}}
{{- $i := .Values.ipam -}}
{{- if $i.config -}}
{{- toJson $i.config -}}
{{- else -}}
{{- if and (ne $i.type "static") (not $i.subnet) -}}
{{- fail (printf "ipam.subnet is required for ipam.type %q (or give a raw ipam.config)" $i.type) -}}
{{- end -}}
{{- $ipam := dict "type" $i.type -}}
{{- if eq $i.type "host-local" -}}
{{- $range := dict "subnet" $i.subnet -}}
{{- if $i.rangeStart }}{{ $_ := set $range "rangeStart" $i.rangeStart }}{{ end -}}
{{- if $i.rangeEnd }}{{ $_ := set $range "rangeEnd" $i.rangeEnd }}{{ end -}}
{{- if $i.gateway }}{{ $_ := set $range "gateway" $i.gateway }}{{ end -}}
{{- $_ := set $ipam "ranges" (list (list $range)) -}}
{{- else if eq $i.type "whereabouts" -}}
{{- $_ := set $ipam "range" $i.subnet -}}
{{- if $i.rangeStart }}{{ $_ := set $ipam "range_start" $i.rangeStart }}{{ end -}}
{{- if $i.rangeEnd }}{{ $_ := set $ipam "range_end" $i.rangeEnd }}{{ end -}}
{{- if $i.gateway }}{{ $_ := set $ipam "gateway" $i.gateway }}{{ end -}}
{{- end -}}
{{- if $i.routes -}}
{{- $routes := list -}}
{{- range $i.routes -}}
{{- $r := dict "dst" .dst -}}
{{- if .gw }}{{ $_ := set $r "gw" .gw }}{{ end -}}
{{- $routes = append $routes $r -}}
{{- end -}}
{{- $_ := set $ipam "routes" $routes -}}
{{- end -}}
{{- toJson $ipam -}}
{{- end -}}
{{- end -}}

{{/* The names of the switches switchd will have: "default" and .Values.switches. */}}
{{- define "podswitch.switchNames" -}}
{{- $seen := list -}}
{{- range $i, $s := .Values.switches -}}
{{- if has $s.name $seen -}}
{{- fail (printf "switches[%d]: switch %q is listed twice" $i $s.name) -}}
{{- end -}}
{{- $seen = append $seen $s.name -}}
{{- end -}}
{{- toJson (prepend $seen "default" | uniq) -}}
{{- end -}}

{{/* The podswitch plugin entry of the default network's conflist, as JSON. */}}
{{- define "podswitch.plugin" -}}
{{- $names := include "podswitch.switchNames" . | fromJsonArray -}}
{{- if not (has .Values.cni.switch $names) -}}
{{- fail (printf "cni.switch: switch %q is neither \"default\" nor in switches" .Values.cni.switch) -}}
{{- end -}}
{{- $p := dict "type" "podswitch" "switch" .Values.cni.switch "socket" (include "podswitch.socket" .) -}}
{{- $_ := set $p "mtu" (int .Values.cni.mtu) -}}
{{- $_ := set $p "vlan" (int .Values.defaultVlan) -}}
{{- $_ := set $p "macSpoofCheck" .Values.cni.macSpoofCheck -}}
{{- $q := dict -}}
{{- range $dir := list "ingress" "egress" -}}
{{- $rate := int64 (index $.Values.qos (printf "%sRate" $dir) | default 0) -}}
{{- $burst := int64 (index $.Values.qos (printf "%sBurst" $dir) | default 0) -}}
{{- if and (gt $burst 0) (eq $rate 0) -}}
{{- fail (printf "qos.%sBurst needs qos.%sRate (a burst of an unlimited rate means nothing)" $dir $dir) -}}
{{- end -}}
{{- if gt $rate 0 -}}
{{- $_ := set $q (printf "%sRate" $dir) $rate -}}
{{- if gt $burst 0 }}{{ $_ := set $q (printf "%sBurst" $dir) $burst }}{{ end -}}
{{- end -}}
{{- end -}}
{{- if $q }}{{ $_ := set $p "qos" $q }}{{ end -}}
{{- $_ := set $p "ipam" (include "podswitch.ipam" . | fromJson) -}}
{{- if .Values.cni.capabilities }}{{ $_ := set $p "capabilities" .Values.cni.capabilities }}{{ end -}}
{{- toJson $p -}}
{{- end -}}

{{/*
A JSON object, one key per line: the keys in .first in that order, then the
others sorted; values as compact JSON. Input: dict "obj" DICT "first" LIST
"indent" N (spaces before the keys; the closing brace gets N-2).
*/}}
{{- define "podswitch.orderedJson" -}}
{{- $obj := .obj -}}
{{- $pad := repeat (int .indent) " " -}}
{{- $keys := list -}}
{{- range .first }}{{ if hasKey $obj . }}{{ $keys = append $keys . }}{{ end }}{{ end -}}
{{- range (keys $obj | sortAlpha) }}{{ if not (has . $keys) }}{{ $keys = append $keys . }}{{ end }}{{ end -}}
{{- $lines := list -}}
{{- range $keys }}{{ $lines = append $lines (printf "%s%s: %s" $pad (toJson .) (toJson (index $obj .))) }}{{ end -}}
{{- printf "{\n%s\n%s}" (join ",\n" $lines) (repeat (sub (int .indent) 2 | int) " ") -}}
{{- end -}}

{{/* The default network's conflist, its plugin entries' keys in a readable order. */}}
{{- define "podswitch.conflist" -}}
{{- $order := list "type" "switch" "socket" "mtu" "vlan" "trunk" "qos" "macSpoofCheck" "linkState" "ipam" "capabilities" -}}
{{- $plugins := list (include "podswitch.orderedJson" (dict "obj" (include "podswitch.plugin" . | fromJson) "first" $order "indent" 6)) -}}
{{- range .Values.cni.chain -}}
{{- $plugins = append $plugins (include "podswitch.orderedJson" (dict "obj" . "first" (list "type") "indent" 6)) -}}
{{- end -}}
{
  "cniVersion": {{ toJson .Values.cni.cniVersion }},
  "name": {{ toJson .Values.cni.networkName }},
  "plugins": [
    {{ join ",\n    " $plugins }}
  ]
}
{{- end -}}

{{/*
switches.json, read by switchd --switches-file at start: VSwitches (POST
/v1/switches bodies) and ports (POST /v1/ports bodies: the uplink and the
overlay) to create when they do not exist. The overlay is one trunk port
"overlay" carrying every listed VLAN, its VLAN->VNI map ("vni": [{"vlan",
"vni"}]) holding only the VNIs that differ from their VLAN ID.
*/}}
{{- define "podswitch.switchesFile" -}}
{{- $names := include "podswitch.switchNames" . | fromJsonArray -}}
{{- $switches := list -}}
{{- range .Values.switches -}}
{{- $s := dict "name" .name -}}
{{- if .agingSeconds }}{{ $_ := set $s "agingSeconds" (int .agingSeconds) }}{{ end -}}
{{- if .maxFdbEntries }}{{ $_ := set $s "maxFdbEntries" (int .maxFdbEntries) }}{{ end -}}
{{- if hasKey . "multicastSnooping" }}{{ $_ := set $s "multicastSnooping" .multicastSnooping }}{{ end -}}
{{- if hasKey . "multicastFloodUnknown" }}{{ $_ := set $s "multicastFloodUnknown" .multicastFloodUnknown }}{{ end -}}
{{- if .multicastMembershipSeconds }}{{ $_ := set $s "multicastMembershipSeconds" (int .multicastMembershipSeconds) }}{{ end -}}
{{- $switches = append $switches $s -}}
{{- end -}}
{{- $ports := list -}}
{{- $u := .Values.uplink -}}
{{- if $u.enabled -}}
{{- if not (has $u.switch $names) -}}
{{- fail (printf "uplink.switch: switch %q is neither \"default\" nor in switches" $u.switch) -}}
{{- end -}}
{{- $port := dict "id" (printf "uplink-%s" $u.nic) "switch" $u.switch "nic" (dict "kind" "uplink" "ifname" $u.nic) -}}
{{- $_ := set $port "trunk" (include "podswitch.trunk" (dict "trunk" $u.trunk "path" "uplink.trunk") | fromJsonArray) -}}
{{- if $u.nativeVlan }}{{ $_ := set $port "vlan" (int $u.nativeVlan) }}{{ end -}}
{{- $ports = append $ports $port -}}
{{- end -}}
{{- $o := .Values.overlay -}}
{{- if $o.enabled -}}
{{- if not (has $o.switch $names) -}}
{{- fail (printf "overlay.switch: switch %q is neither \"default\" nor in switches" $o.switch) -}}
{{- end -}}
{{- $seen := dict -}}
{{- $vniOf := dict -}}
{{- $trunk := list -}}
{{- $vnis := list -}}
{{- range $i, $v := $o.vlans -}}
{{- $vlan := int $v.vlan -}}
{{- if hasKey $seen (toString $vlan) -}}
{{- fail (printf "overlay.vlans[%d]: VLAN %d is listed twice" $i $vlan) -}}
{{- end -}}
{{- $_ := set $seen (toString $vlan) true -}}
{{- $vni := int (default $vlan $v.vni) -}}
{{- if hasKey $vniOf (toString $vni) -}}
{{- fail (printf "overlay.vlans[%d]: VNI %d is already used by VLAN %d" $i $vni (int (index $vniOf (toString $vni)))) -}}
{{- end -}}
{{- $_ := set $vniOf (toString $vni) $vlan -}}
{{- $trunk = append $trunk (dict "id" $vlan) -}}
{{- if ne $vni $vlan }}{{ $vnis = append $vnis (dict "vlan" $vlan "vni" $vni) }}{{ end -}}
{{- end -}}
{{- $vx := dict "local" "${NODE_IP}" "port" (int $o.port) "underlay" $o.underlay "peers" $o.peers -}}
{{- if $vnis }}{{ $_ := set $vx "vni" $vnis }}{{ end -}}
{{- $nic := dict "kind" "vxlan" "ifname" "psovl0" "vxlan" $vx -}}
{{- $ports = append $ports (dict "id" "overlay" "switch" $o.switch "trunk" $trunk "nic" $nic) -}}
{{- end -}}
{{- toPrettyJson (dict "switches" $switches "ports" $ports) -}}
{{- end -}}

{{/* How many poll threads switchd runs: one per CPU of pollCpus, else one. */}}
{{- define "podswitch.pollThreads" -}}
{{- $n := 0 -}}
{{- if .Values.pollCpus -}}
{{- range (splitList "," .Values.pollCpus) -}}
{{- $r := splitList "-" . -}}
{{- if eq (len $r) 2 -}}
{{- if gt (int (index $r 0)) (int (index $r 1)) -}}
{{- fail (printf "pollCpus: range %s is reversed" .) -}}
{{- end -}}
{{- $n = add $n (add1 (sub (int (index $r 1)) (int (index $r 0)))) -}}
{{- else -}}
{{- $n = add1 $n -}}
{{- end -}}
{{- end -}}
{{- else -}}
{{- $n = 1 -}}
{{- end -}}
{{- $n -}}
{{- end -}}

{{/*
Bytes of a Kubernetes memory quantity, or -1 where it is not a plain one
(integer with an optional Ki/Mi/Gi/Ti/k/M/G/T suffix).
*/}}
{{- define "podswitch.bytes" -}}
{{- $q := toString . -}}
{{- $units := dict "" 1 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 -}}
{{- if regexMatch "^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$" $q -}}
{{- $num := regexFind "^[0-9]+" $q -}}
{{- $unit := trimPrefix $num $q -}}
{{- mul (int64 $num) (index $units $unit) -}}
{{- else -}}
-1
{{- end -}}
{{- end -}}

{{/*
Fails when the switchd memory limit cannot hold the pinned UMEMs (one per
poll thread, umemFrames x 4 KiB each) plus 64 MiB for the rest.
*/}}
{{- define "podswitch.checkMemory" -}}
{{- $threads := int (include "podswitch.pollThreads" .) -}}
{{- $need := add (mul $threads (int .Values.umemFrames) 4096) 67108864 -}}
{{- $limits := .Values.resources.limits | default dict -}}
{{- if $limits.memory -}}
{{- $have := int64 (include "podswitch.bytes" $limits.memory) -}}
{{- if and (ge $have 0) (lt $have $need) -}}
{{- fail (printf "resources.limits.memory %s is below what switchd pins: %d poll thread(s) x umemFrames %d x 4 KiB + 64 MiB = %d MiB" (toString $limits.memory) $threads (int .Values.umemFrames) (div $need 1048576)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
