#!/usr/bin/env bash
# podswitch demo: builds switchd, starts it in its own "node" network
# namespace, attaches two pods on VLAN 100 and a third on VLAN 200, pings,
# and shows what switchctl sees. Everything is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $EUID -eq 0 ]] || { echo "demo: run as root (it creates network namespaces)" >&2; exit 1; }
scripts/setup.sh --minimal >/dev/null
cargo build --release --locked -q
BIN=$PWD/target/release
P=psdemo$$
DIR=$(mktemp -d /tmp/$P.XXXX)
SOCK=$DIR/switchd.sock
ctl() { "$BIN/switchctl" --socket "$SOCK" "$@"; }
cleanup() {
  [[ -n "${SWITCHD_PID:-}" ]] && kill "$SWITCHD_PID" 2>/dev/null && wait "$SWITCHD_PID" 2>/dev/null
  for ns in $P-node $P-pod1 $P-pod2 $P-pod3; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "node namespace with switchd"
ip netns add $P-node
ip -n $P-node link set lo up
ip netns exec $P-node "$BIN/switchd" --socket "$SOCK" --state-dir "$DIR/state" 2>"$DIR/switchd.log" &
SWITCHD_PID=$!
for _ in $(seq 100); do ctl status >/dev/null 2>&1 && break; sleep 0.05; done
ctl status

step "three pods: pod1, pod2 on VLAN 100, pod3 on VLAN 200 (all in 10.10.0.0/24)"
for i in 1 2 3; do
  ip netns add $P-pod$i
  ip -n $P-pod$i link set lo up
  ip link add dm${$}h$i netns $P-node type veth peer name eth0 netns $P-pod$i
  ip netns exec $P-pod$i ethtool -K eth0 tx off >/dev/null   # AF_XDP needs pod TX checksums done
  ip -n $P-pod$i addr add 10.10.0.$i/24 dev eth0
  ip -n $P-pod$i link set eth0 up
done
ctl port add --ifname dm${$}h1 --id pod1 --vlan 100
ctl port add --ifname dm${$}h2 --id pod2 --vlan 100
ctl port add --ifname dm${$}h3 --id pod3 --vlan 200

step "pod1 -> pod2 (same VLAN): should answer"
ip netns exec $P-pod1 ping -c 3 -i 0.2 -W 1 10.10.0.2
step "pod1 -> pod3 (other VLAN): should not"
ip netns exec $P-pod1 ping -c 2 -i 0.2 -W 1 10.10.0.3 || echo "(no answer: VLANs are isolated)"

step "switchctl ports"
ctl ports
step "switchctl fdb"
ctl fdb
step "pull pod2's cable (link down), then plug it back"
ctl port set pod2 --link down >/dev/null
ip -n $P-pod2 link show eth0 | head -1
ip netns exec $P-pod1 ping -c 1 -W 1 10.10.0.2 >/dev/null || echo "pod2 unreachable while down"
ctl port set pod2 --link up >/dev/null
for _ in $(seq 20); do ip netns exec $P-pod1 ping -c 1 -W 1 10.10.0.2 >/dev/null && break; done
ip netns exec $P-pod1 ping -c 1 -W 1 10.10.0.2 | head -2 | tail -1
step "done"
