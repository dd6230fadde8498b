#!/usr/bin/env bash
# podswitch benchmark: switchd against a plain veth ("wire"), a Linux bridge
# and Open vSwitch's userspace datapath with AF_XDP ports, in ONE run with
# interleaved repetitions (rep 1 of every topology, then rep 2, ...).
# Method and peers: /work/shared/notes/benchmarking.md.
#
#   sudo bench/run.sh                 # 3 reps (about 4-5 minutes)
#   REPS=1 bench/run.sh               # quick check
#   TOPOS="wire switchd" bench/run.sh # subset (names below)
#
# Every pod is a network namespace with one veth (1 rx / 1 tx queue on both
# ends) whose host end sits in a "node" namespace holding the switch under
# test; nothing is created in the root namespace. Pod TX checksum offload
# is OFF in every topology (AF_XDP needs it); wire and bridge TCP are also
# measured with offloads ON (rows "wire+offload", "bridge+offload").
#
# Output: raw TSV in bench/results/<timestamp>.tsv, a Markdown report on
# stdout and in bench/results/<timestamp>.md. Numbers, not pass/fail.
set -uo pipefail
shopt -s nullglob

cd "$(dirname "$0")/.."
ROOT=$PWD
[[ $EUID -eq 0 ]] || { echo "bench: run as root (it creates network namespaces)" >&2; exit 1; }

# ---------------------------------------------------------------- settings
REPS=${REPS:-3}
TOPOS=${TOPOS:-"wire bridge ovs-afxdp switchd switchd-norps switchd-2t"}
UDP_SECS=${UDP_SECS:-5}        # trafgen run time
UDP_WARM=${UDP_WARM:-1}        # ... of which the first UDP_WARM s are not counted
UDP_WIN=${UDP_WIN:-3}          # counting window
TCP_SECS=${TCP_SECS:-4}
RTT_SECS=${RTT_SECS:-3}
IDLE_SECS=${IDLE_SECS:-5}
TRAFGEN_CPU=${TRAFGEN_CPU:-0}
RTT_CPU=${RTT_CPU:-0}          # sockperf client AND server on this CPU (see measure_rtt)
PMD_CPU=${PMD_CPU:-1}
SWITCHD_CPU=${SWITCHD_CPU:-}   # empty: switchd's default (--poll-cpu auto: the last CPU); N: --poll-cpu N
SWITCHD_ARGS=${SWITCHD_ARGS:-} # extra switchd flags, e.g. "--xdp-mode generic"
OVS_XDP_MODE=${OVS_XDP_MODE:-best-effort}   # OVS options:xdp-mode (native-with-zerocopy, native, generic)
SWITCHD=${SWITCHD:-$ROOT/target/release/switchd}
SWITCHCTL=${SWITCHCTL:-$ROOT/target/release/switchctl}
VLAN=100
IP1=10.201.0.1 IP2=10.201.0.2
MAC1=02:00:00:c9:00:01 MAC2=02:00:00:c9:00:02
HZ=$(getconf CLK_TCK)

for t in $TOPOS; do
  case $t in wire|bridge|ovs-afxdp|switchd|switchd-norps|switchd-2t) ;; *) echo "bench: unknown topology '$t'" >&2; exit 2;; esac
done
[[ $REPS =~ ^[1-9][0-9]*$ ]] || { echo "bench: REPS must be a positive integer" >&2; exit 2; }
(( UDP_WARM + UDP_WIN < UDP_SECS )) || { echo "bench: need UDP_WARM + UDP_WIN < UDP_SECS" >&2; exit 2; }
for tool in ip ethtool trafgen iperf3 sockperf jq taskset timeout python3; do
  command -v $tool >/dev/null || { echo "bench: missing $tool" >&2; exit 1; }
done
if [[ ! -x $SWITCHD || ! -x $SWITCHCTL ]]; then
  echo "bench: building switchd/switchctl (cargo build --release)" >&2
  cargo build --release --locked -q || exit 1
fi
if (( $(nproc) < 2 )); then PMD_CPU=0; fi

# ---------------------------------------------------------------- run state
P=pb$$                              # unique prefix: namespaces and ifnames
NS_NODE=$P-node NS_A=$P-pod1 NS_B=$P-pod2
H1=${P}h1 H2=${P}h2                 # host ends in the node namespace (<= 15 chars)
WORK=$(mktemp -d /tmp/$P.XXXXXX)
R=$WORK/ovs                         # private Open vSwitch dir
export OVS_RUNDIR=$R OVS_DBDIR=$R OVS_LOGDIR=$R OVS_SYSCONFDIR=$R
STAMP=$(date +%Y%m%d-%H%M%S)
mkdir -p "$ROOT/bench/results"
TSV=$ROOT/bench/results/$STAMP.tsv
MD=$ROOT/bench/results/$STAMP.md

SW_PID=""        # switch process (ovs-vswitchd or switchd) of the current topology
SWITCHD_PID=""   # switchd started by us
HOLD_A="" HOLD_B=""   # idle processes in the pods: /proc/PID/net/dev reads pod counters
BG_PIDS=()       # other background processes of the current topology
FAIL_REASON=""

log()  { printf '%s  %s\n' "$(date +%T)" "$*" >&2; }
rec()  { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-}" >>"$TSV"; }   # rep topo metric value note
fail() { FAIL_REASON=$*; return 1; }   # run_topo reports it

alive()   { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }
stop_pid() {   # stop_pid PID [seconds]: TERM, wait, then KILL
  local pid=${1:-} n=$(( ${2:-5} * 10 ))
  alive "$pid" || return 0
  kill "$pid" 2>/dev/null
  while alive "$pid" && (( n-- > 0 )); do sleep 0.1; done
  alive "$pid" && kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 0
}
cpu_ticks() {  # utime+stime of a whole process (all threads), in clock ticks
  local s; s=$(cat /proc/"$1"/stat 2>/dev/null) || { echo 0; return; }
  s=${s##*) }; set -- $s; echo $(( ${12} + ${13} ))   # fields 14 and 15
}
ticks_to_s() { awk -v t="$1" -v hz="$HZ" 'BEGIN { printf "%.2f", t / hz }'; }

# ---------------------------------------------------------------- teardown
ovs_stop() {
  local vp dp
  [[ -d $R ]] || return 0
  vp=$(cat "$R/ovs-vswitchd.pid" 2>/dev/null); dp=$(cat "$R/ovsdb-server.pid" 2>/dev/null)
  if alive "$vp"; then
    timeout 10 ovs-appctl -t "$R/ovs-vswitchd.ctl" exit --cleanup >/dev/null 2>&1
    local n=50; while alive "$vp" && (( n-- > 0 )); do sleep 0.1; done
    alive "$vp" && { log "ovs-vswitchd did not exit, killing $vp"; kill -9 "$vp" 2>/dev/null; }
  fi
  if alive "$dp"; then
    kill "$dp" 2>/dev/null
    local n=30; while alive "$dp" && (( n-- > 0 )); do sleep 0.1; done
    alive "$dp" && kill -9 "$dp" 2>/dev/null
  fi
  rm -rf "$R"   # no stale pidfiles for the next teardown
  return 0
}
teardown() {
  local pid ns
  for pid in "${BG_PIDS[@]}"; do stop_pid "$pid" 2; done
  BG_PIDS=()
  stop_pid "$SWITCHD_PID" 5; SWITCHD_PID=""
  ovs_stop
  stop_pid "$HOLD_A" 1; stop_pid "$HOLD_B" 1; HOLD_A="" HOLD_B=""
  SW_PID=""
  for ns in $NS_A $NS_B $NS_NODE; do
    [[ -e /run/netns/$ns ]] || continue
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done   # only ever ours
    ip netns del "$ns" 2>/dev/null
  done
  return 0
}
cleanup() {
  trap - EXIT INT TERM
  teardown
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------- topologies
pod_ns() {   # create the two pod namespaces (and the node one unless "wire")
  local ns
  for ns in $NS_A $NS_B "$@"; do
    ip netns add "$ns" || return 1
    ip -n "$ns" link set lo up
    # no IPv6 chatter (RS/ND/MLD) in the measurements
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done
}
pod_addr() {  # addresses, MACs, offloads off, up; then idle holder processes
  ip -n $NS_A link set eth0 address $MAC1 || return 1
  ip -n $NS_B link set eth0 address $MAC2 || return 1
  ip -n $NS_A addr add $IP1/24 dev eth0 || return 1
  ip -n $NS_B addr add $IP2/24 dev eth0 || return 1
  pod_offloads off || return 1
  ip -n $NS_A link set eth0 up && ip -n $NS_B link set eth0 up || return 1
  ip netns exec $NS_A sleep 100000 & HOLD_A=$!
  ip netns exec $NS_B sleep 100000 & HOLD_B=$!
}
pod_offloads() {  # off: TX checksum off (takes TSO/GSO with it); on: defaults back
  local ns
  for ns in $NS_A $NS_B; do
    if [[ $1 == off ]]; then ip netns exec "$ns" ethtool -K eth0 tx off >/dev/null 2>&1 || return 1
    else ip netns exec "$ns" ethtool -K eth0 tx on sg on tso on gso on >/dev/null 2>&1 || return 1
    fi
  done
}
node_veths() {  # pod eth0 <-> host end in the node namespace (QUEUES queues each end)
  local q=${QUEUES:-1}
  ip -n $NS_NODE link add $H1 numtxqueues $q numrxqueues $q type veth \
     peer name eth0 netns $NS_A numtxqueues $q numrxqueues $q || return 1
  ip -n $NS_NODE link add $H2 numtxqueues $q numrxqueues $q type veth \
     peer name eth0 netns $NS_B numtxqueues $q numrxqueues $q || return 1
  ip -n $NS_NODE link set $H1 up && ip -n $NS_NODE link set $H2 up
}

setup_wire() {
  pod_ns || return 1
  ip -n $NS_A link add eth0 numtxqueues 1 numrxqueues 1 type veth \
     peer name eth0 netns $NS_B numtxqueues 1 numrxqueues 1 || return 1
  pod_addr
}
setup_bridge() {
  pod_ns $NS_NODE && node_veths && pod_addr || return 1
  ip -n $NS_NODE link add br0 type bridge || return 1
  ip -n $NS_NODE link set $H1 master br0 && ip -n $NS_NODE link set $H2 master br0 || return 1
  ip -n $NS_NODE link set br0 up
}
setup_ovs_afxdp() {
  local V i err ofp
  command -v ovs-vswitchd >/dev/null || { fail "ovs-vswitchd not installed"; return 1; }
  pod_ns $NS_NODE && node_veths && pod_addr || return 1
  rm -rf "$R"; mkdir -p "$R"
  V=(timeout 10 ovs-vsctl --db=unix:$R/db.sock)
  ovsdb-tool create "$R/conf.db" /usr/share/openvswitch/vswitch.ovsschema || { fail "ovsdb-tool create"; return 1; }
  ovsdb-server "$R/conf.db" --remote=punix:$R/db.sock --pidfile=$R/ovsdb-server.pid \
    --unixctl=$R/ovsdb-server.ctl --log-file=$R/ovsdb-server.log --detach --no-chdir >/dev/null 2>&1 \
    || { fail "ovsdb-server did not start: $(tail -3 "$R/ovsdb-server.log" 2>/dev/null)"; return 1; }
  "${V[@]}" --no-wait init || { fail "ovs-vsctl init"; return 1; }
  "${V[@]}" --no-wait set Open_vSwitch . other_config:pmd-cpu-mask=$(printf '0x%x' $((1 << PMD_CPU))) || return 1
  ip netns exec $NS_NODE ovs-vswitchd unix:$R/db.sock --disable-system --pidfile=$R/ovs-vswitchd.pid \
    --unixctl=$R/ovs-vswitchd.ctl --log-file=$R/ovs-vswitchd.log --detach --no-chdir >/dev/null 2>&1 \
    || { fail "ovs-vswitchd did not start: $(tail -3 "$R/ovs-vswitchd.log" 2>/dev/null)"; return 1; }
  SW_PID=$(cat "$R/ovs-vswitchd.pid")
  "${V[@]}" add-br br0 -- set bridge br0 datapath_type=netdev || { fail "add-br br0 (netdev datapath)"; return 1; }
  for i in $H1 $H2; do
    "${V[@]}" add-port br0 $i tag=$VLAN -- set interface $i type=afxdp options:n_rxq=1 options:xdp-mode=$OVS_XDP_MODE \
      || { fail "add-port $i: ovs-vsctl failed or timed out"; }
    err=$("${V[@]}" get interface $i error 2>/dev/null)
    ofp=$("${V[@]}" get interface $i ofport 2>/dev/null)
    if [[ -n $FAIL_REASON || ( -n $err && $err != '[]' ) || $ofp == -1 || -z $ofp ]]; then
      FAIL_REASON="AF_XDP port $i did not come up (ofport=$ofp error=$err)"
      grep -E 'netdev_afxdp|\|(ERR|WARN)\|' "$R/ovs-vswitchd.log" | tail -8 | sed 's/^/    ovs: /' >&2
      return 1
    fi
  done
  grep -q 'native XDP mode will be in use' "$R/ovs-vswitchd.log" || log "note: OVS AF_XDP not in native mode: $(grep -o '[^|]*XDP mode will be in use' "$R/ovs-vswitchd.log" | tail -1)"
}
setup_switchd_norps() { RPS_STEERING=0 setup_switchd; }
# Two poll threads on CPUs 0 and 1, pod veths with two queues (what the CNI
# creates for a two-thread switchd); every CPU polls, so no RPS steering.
setup_switchd_2t() { QUEUES=2 POLL_ARGS="--poll-cpus 0-$(( $(nproc) > 1 ? 1 : 0 ))" RPS_STEERING=0 setup_switchd; }

setup_switchd() {
  local ctl=("$SWITCHCTL" --socket "$WORK/s.sock") i n
  pod_ns $NS_NODE && node_veths && pod_addr || return 1
  rm -rf "$WORK/state" "$WORK/s.sock"
  # ip netns exec (and taskset) exec switchd: $! is the daemon's PID
  # switchd pins its poll thread itself (--poll-cpu, default: the last CPU)
  local pin=(); [[ -n $SWITCHD_CPU ]] && pin=(--poll-cpu "$SWITCHD_CPU")
  [[ -n ${POLL_ARGS:-} ]] && pin=($POLL_ARGS)
  # shellcheck disable=SC2086
  ip netns exec $NS_NODE "$SWITCHD" --socket "$WORK/s.sock" --state-dir "$WORK/state" "${pin[@]}" $SWITCHD_ARGS >"$WORK/switchd.log" 2>&1 &
  SWITCHD_PID=$! SW_PID=$!
  for ((n = 0; n < 100; n++)); do
    timeout 2 "${ctl[@]}" status >/dev/null 2>&1 && break
    alive "$SWITCHD_PID" || break
    sleep 0.1
  done
  timeout 2 "${ctl[@]}" status >/dev/null 2>&1 || { fail "switchd not ready: $(tail -3 "$WORK/switchd.log")"; return 1; }
  [[ $(cat /proc/$SW_PID/comm 2>/dev/null) == switchd ]] || { fail "PID $SW_PID is not switchd"; return 1; }
  for i in $H1 $H2; do
    timeout 10 "${ctl[@]}" port add --ifname $i --vlan $VLAN >/dev/null 2>"$WORK/ctl.err" \
      || { fail "port add $i: $(cat "$WORK/ctl.err") $(tail -2 "$WORK/switchd.log")"; return 1; }
  done
  # What the podswitch CNI does for a pod: steer its receive processing
  # (RPS) off switchd's poll CPU (`switchd-norps` leaves it inline).
  local poll mask ns
  poll=$(curl -s --unix-socket "$WORK/s.sock" http://x/v1/datapath | jq -r '.pollCpu // empty')
  if [[ -n $poll && ${RPS_STEERING:-1} == 1 ]]; then
    mask=$(printf '%x' $(( (1 << $(nproc)) - 1 - (1 << poll) )))
    for ns in $NS_A $NS_B; do
      [[ $mask != 0 ]] && ip netns exec "$ns" sh -c "echo $mask > /sys/class/net/eth0/queues/rx-0/rps_cpus"
    done
  fi
}

connectivity() {  # pod1 -> pod2 ping (also lets the switch learn both MACs)
  local n
  for ((n = 0; n < 10; n++)); do
    ip netns exec $NS_A ping -c 1 -W 1 -q $IP2 >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  fail "pod1 cannot ping pod2"
}

# ---------------------------------------------------------------- measurements
counters() {  # "<epoch> <pod1 tx_packets> <pod1 tx_dropped> <pod2 rx_packets>" from /proc/PID/net/dev
  local t; t=$(date +%s.%N)
  awk -v t="$t" -v a="/proc/$HOLD_A/net/dev" '
    { sub(/:/, " ") }
    $1 == "eth0" && FILENAME == a { tx = $11; txd = $13 }
    $1 == "eth0" && FILENAME != a { rx = $3 }
    END { print t, tx, txd, rx }' "/proc/$HOLD_A/net/dev" "/proc/$HOLD_B/net/dev"
}

measure_udp() {  # rep topo
  local rep=$1 topo=$2 c0 c1 tg pid
  local cpu0=0 cpu1=0
  [[ -n $SW_PID ]] && cpu0=$(cpu_ticks $SW_PID)
  timeout $UDP_SECS ip netns exec $NS_A taskset -c $TRAFGEN_CPU \
    trafgen -o eth0 -i "$WORK/udp60.cfg" -P 1 -Q -C >"$WORK/trafgen.log" 2>&1 &
  tg=$!
  sleep $UDP_WARM; c0=$(counters)
  sleep $UDP_WIN;  c1=$(counters)
  wait $tg
  [[ -n $SW_PID ]] && cpu1=$(cpu_ticks $SW_PID)
  read -r t0 tx0 txd0 rx0 <<<"$c0"; read -r t1 tx1 txd1 rx1 <<<"$c1"
  local dt sent rx
  dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
  sent=$(( (tx1 - tx0) + (txd1 - txd0) )) rx=$(( rx1 - rx0 ))
  if (( sent <= 0 )); then
    log "trafgen sent nothing: $(grep -v 'socket memory' "$WORK/trafgen.log" | tail -3)"
    rec "$rep" "$topo" udp_rx_pps NA "trafgen sent nothing"
    return 1
  fi
  local rxpps sentpps loss
  rxpps=$(awk -v n=$rx -v d="$dt" 'BEGIN { printf "%.0f", n / d }')
  sentpps=$(awk -v n=$sent -v d="$dt" 'BEGIN { printf "%.0f", n / d }')
  loss=$(awk -v s=$sent -v r=$rx 'BEGIN { l = 100 * (s - r) / s; if (l < 0) l = 0; printf "%.2f", l }')
  rec "$rep" "$topo" udp_rx_pps "$rxpps" "window ${dt}s, tx_dropped $((txd1 - txd0))"
  rec "$rep" "$topo" udp_sent_pps "$sentpps"
  rec "$rep" "$topo" udp_loss_pct "$loss"
  if [[ -n $SW_PID ]]; then rec "$rep" "$topo" udp_switch_cpu_s "$(ticks_to_s $((cpu1 - cpu0)))" "over ${UDP_SECS}s"
  else rec "$rep" "$topo" udp_switch_cpu_s - "kernel softirq"; fi
  log "  udp: $rxpps pps received, loss $loss %"
}

measure_tcp() {  # rep topo (topo may be wire+offload ...)
  local rep=$1 topo=$2 srv n cpu0=0 cpu1=0 gbps retr
  ip netns exec $NS_B timeout 15 iperf3 -s -1 -B $IP2 >/dev/null 2>&1 &
  srv=$!; BG_PIDS+=($srv)
  for ((n = 0; n < 50; n++)); do
    ip netns exec $NS_B ss -Hltn 'sport = :5201' 2>/dev/null | grep -q . && break
    sleep 0.05
  done
  [[ -n $SW_PID ]] && cpu0=$(cpu_ticks $SW_PID)
  timeout 10 ip netns exec $NS_A iperf3 -c $IP2 -t $TCP_SECS -J >"$WORK/iperf.json" 2>&1
  [[ -n $SW_PID ]] && cpu1=$(cpu_ticks $SW_PID)
  stop_pid $srv 1
  gbps=$(jq -r '.end.sum_received.bits_per_second / 1e9 | . * 1000 | round / 1000' "$WORK/iperf.json" 2>/dev/null)
  retr=$(jq -r '.end.sum_sent.retransmits' "$WORK/iperf.json" 2>/dev/null)
  if [[ -z $gbps || $gbps == null ]]; then
    log "iperf3 failed: $(jq -r '.error // empty' "$WORK/iperf.json" 2>/dev/null || tail -2 "$WORK/iperf.json")"
    rec "$rep" "$topo" tcp_gbps NA "iperf3 failed"
    return 1
  fi
  rec "$rep" "$topo" tcp_gbps "$gbps" "receiver, 1 stream, ${TCP_SECS}s"
  rec "$rep" "$topo" tcp_retr "$retr"
  if [[ $topo != *+offload ]]; then
    if [[ -n $SW_PID ]]; then rec "$rep" "$topo" tcp_switch_cpu_s "$(ticks_to_s $((cpu1 - cpu0)))" "over ${TCP_SECS}s"
    else rec "$rep" "$topo" tcp_switch_cpu_s - "kernel softirq"; fi
  fi
  log "  tcp${topo#${topo%+offload}}: $gbps Gbit/s, $retr retransmits"
}

measure_rtt() {
  local rep=$1 topo=$2 srv n p50
  # Both ends pinned to one CPU: unpinned, RTT is bimodal on 2 vCPUs (same CPU
  # ~11 us, cross-CPU wakeup ~50 us on wire), i.e. placement noise, not the switch.
  ip netns exec $NS_B timeout 15 taskset -c $RTT_CPU sockperf sr -i $IP2 -p 11111 >/dev/null 2>&1 &
  srv=$!; BG_PIDS+=($srv)
  for ((n = 0; n < 50; n++)); do
    ip netns exec $NS_B ss -Hlun 'sport = :11111' 2>/dev/null | grep -q . && break
    sleep 0.05
  done
  timeout 10 ip netns exec $NS_A taskset -c $RTT_CPU sockperf ping-pong -i $IP2 -p 11111 -t $RTT_SECS --full-rtt >"$WORK/sockperf.log" 2>&1
  stop_pid $srv 1
  p50=$(awk '/percentile 50.000/ { print $NF }' "$WORK/sockperf.log")
  if [[ -z $p50 ]]; then
    log "sockperf failed: $(tail -2 "$WORK/sockperf.log")"
    rec "$rep" "$topo" rtt_p50_us NA "sockperf failed"
    return 1
  fi
  rec "$rep" "$topo" rtt_p50_us "$p50" "UDP ping-pong, full RTT"
  log "  rtt p50: $p50 us"
}

measure_idle() {  # CPU % of one core used by the switch process with no traffic
  local rep=$1 topo=$2 c0 c1 t0 t1 pct
  sleep 1
  t0=$(date +%s.%N); c0=$(cpu_ticks $SW_PID)
  sleep $IDLE_SECS
  t1=$(date +%s.%N); c1=$(cpu_ticks $SW_PID)
  pct=$(awk -v c=$((c1 - c0)) -v hz=$HZ -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", 100 * c / hz / (b - a) }')
  rec "$rep" "$topo" idle_cpu_pct "$pct" "2 ports, no traffic, ${IDLE_SECS}s"
  log "  idle: $pct % of one core"
}

keep_logs() {  # copy the switch's log next to the results when a topology fails
  local f=${TSV%.tsv}-$2-rep$1.log
  case $2 in
    ovs-afxdp) [[ -f $R/ovs-vswitchd.log ]] && cp "$R/ovs-vswitchd.log" "$f" ;;
    switchd*)  [[ -f $WORK/switchd.log ]] && cp "$WORK/switchd.log" "$f" ;;
    *) return 0 ;;
  esac
  [[ -f $f ]] && log "log kept: $f"
  return 0
}

run_topo() {  # rep topo
  local rep=$1 topo=$2
  FAIL_REASON=""
  log "rep $rep/$REPS: $topo"
  if ! setup_${topo//-/_}; then
    [[ -n $FAIL_REASON ]] || FAIL_REASON="setup failed"
    log "FAILED: $topo: $FAIL_REASON"
    rec "$rep" "$topo" status failed "$FAIL_REASON"
    keep_logs "$rep" "$topo"
    teardown; return 1
  fi
  if ! connectivity; then
    log "FAILED: $topo: $FAIL_REASON"
    rec "$rep" "$topo" status failed "$FAIL_REASON"
    keep_logs "$rep" "$topo"
    teardown; return 1
  fi
  case $topo in switchd|ovs-afxdp) measure_idle "$rep" "$topo" ;; esac
  measure_udp "$rep" "$topo"
  measure_tcp "$rep" "$topo"
  measure_rtt "$rep" "$topo"
  if [[ $topo == wire || $topo == bridge ]]; then
    if pod_offloads on; then measure_tcp "$rep" "$topo+offload"
    else log "could not turn pod offloads back on"; fi
  fi
  rec "$rep" "$topo" status ok
  teardown
}

# ---------------------------------------------------------------- main
cat >"$WORK/udp60.cfg" <<EOF
/* 60-byte UDP frame (without FCS) to pod2's static MAC: pod2 never answers */
{
  eth(da=$MAC2, sa=$MAC1, type=0x0800),
  ipv4(saddr=$IP1, daddr=$IP2, ttl=64, df),
  udp(sport=9, dport=9),
  fill(0x00, 18)
}
EOF

{
  echo "# date: $(date -Is)"
  echo "# host: nproc=$(nproc), kernel $(uname -r), $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "# podswitch: $(git -C "$ROOT" describe --always --dirty 2>/dev/null), switchd $(stat -c %y "$SWITCHD" | cut -d. -f1)"
  echo "# peers: $(ovs-vswitchd --version 2>/dev/null | head -1); $(iperf3 --version | head -1); sockperf $(sockperf --version 2>&1 | awk '/version/ { print $3; exit }' | tr -d ,)"
  echo "# settings: reps=$REPS topologies=\"$TOPOS\" udp=${UDP_SECS}s (window ${UDP_WIN}s after ${UDP_WARM}s) tcp=${TCP_SECS}s rtt=${RTT_SECS}s idle=${IDLE_SECS}s trafgen_cpu=$TRAFGEN_CPU sockperf_cpu=$RTT_CPU (client+server) iperf3=unpinned ovs_pmd_cpu=$PMD_CPU switchd_cpu=${SWITCHD_CPU:-unpinned} pod_offloads=off"
  printf 'rep\ttopology\tmetric\tvalue\tnote\n'
} >"$TSV"
grep '^#' "$TSV" | sed 's/^# //' >&2
log "raw results: $TSV"

START=$SECONDS
for ((rep = 1; rep <= REPS; rep++)); do
  for topo in $TOPOS; do
    run_topo "$rep" "$topo"
  done
done
log "measurements took $((SECONDS - START)) s"

python3 "$ROOT/bench/report.py" "$TSV" | tee "$MD"
log "report: $MD"
