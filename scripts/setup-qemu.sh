#!/usr/bin/env bash
# Installs what the VM-guest tests (tests/integration/vmguest.py) need on a
# Debian 12 machine (root), idempotently; a rerun with everything present is
# a no-op.
#   - qemu-system-x86 from bookworm-backports (bookworm's own 7.2 would
#     downgrade, i.e. remove, a preinstalled backports qemu-utils), added to
#     the apt sources if missing
#   - busybox-static (the guest's userland) and zstd (for kernel modules
#     packed as .ko.zst; .ko.xz is unpacked by Python's lzma)
# The guest kernel itself is fetched by vmguest.build_guest with
# `apt-get download` (a Debian linux-image-6.1.0-*-amd64) and cached under
# tests/integration/.cache/vmguest.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "setup-qemu: $*"; }
export DEBIAN_FRONTEND=noninteractive
APT=(apt-get -o DPkg::Lock::Timeout=600)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

updated=0
update() {
  ((updated)) && return 0
  "${APT[@]}" update -qq >/dev/null
  updated=1
}

# 1. bookworm-backports in the apt sources.
if ! grep -rqsE '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ ; then
  log "adding bookworm-backports to /etc/apt/sources.list.d/bookworm-backports.list"
  echo "deb http://deb.debian.org/debian bookworm-backports main" >/etc/apt/sources.list.d/bookworm-backports.list
  updated=0
fi

# 2. Plain bookworm packages.
missing=()
for p in busybox-static zstd; do
  installed "$p" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  update
  "${APT[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 3. QEMU from bookworm-backports.
if ! installed qemu-system-x86 || ! command -v qemu-system-x86_64 >/dev/null; then
  log "installing qemu-system-x86 from bookworm-backports"
  update
  "${APT[@]}" install -y -qq -t bookworm-backports --no-install-recommends qemu-system-x86 >/dev/null
fi

qemu-system-x86_64 --version >/dev/null || { echo "setup-qemu: qemu-system-x86_64 does not run" >&2; exit 1; }
[[ -x /bin/busybox ]] || { echo "setup-qemu: /bin/busybox is missing" >&2; exit 1; }
