#!/usr/bin/env bash
# Installs what building and testing podswitch needs on a Debian 12 machine
# (root): Debian packages, and a Python venv with pytest in .venv.
#   scripts/setup.sh           build + test dependencies
#   scripts/setup.sh --minimal build + demo dependencies only
#   scripts/setup.sh --bench   also the benchmark peers (trafgen, iperf3, sockperf, Open vSwitch)
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(clang libbpf-dev linux-libc-dev pkg-config iproute2 ethtool iputils-ping procps python3-venv curl jq
      containernetworking-plugins podman runc busybox-static iptables util-linux iperf3 prometheus tcpdump bpftool)
if [[ "${1:-}" == "--bench" ]]; then
  pkgs+=(netsniff-ng iperf3 sockperf openvswitch-switch)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -q
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null; then
  echo "setup: cargo is missing; install Rust (https://rustup.rs) first" >&2
  exit 1
fi
# The lint gates of scripts/test.sh need clippy and rustfmt.
for pair in "clippy:clippy" "fmt:rustfmt"; do
  sub=${pair%%:*} component=${pair##*:}
  if ! cargo "$sub" --version >/dev/null 2>&1; then
    echo "setup: adding the Rust component $component"
    rustup component add "$component" || { echo "setup: cargo $sub is missing and rustup could not add $component" >&2; exit 1; }
  fi
done
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
# Always: a pin changed since the venv was made reaches it (a no-op otherwise).
.venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
if [[ "${1:-}" != "--minimal" ]]; then
  # Real runtimes the CNI tests drive: podman (CNI backend) from bookworm,
  # containerd 2.x and the CRI API from sid (unpacked under /opt/podswitch-test).
  scripts/setup-containerd.sh
  # helm 3 and 4, kubernetes-validate, promtool (the chart and alert tests).
  scripts/setup-k8s-tools.sh
  scripts/setup-qemu.sh  # QEMU + busybox-static for the VM-guest tests (vmguest.py)
fi
