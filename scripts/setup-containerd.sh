#!/usr/bin/env bash
# Installs what tests/integration/test_containerd.py needs on a Debian 12
# machine (root), idempotently; a rerun with everything present is a no-op.
#   - runc, containernetworking-plugins, busybox-static (bookworm's)
#   - containerd 2.x and the CRI api.proto, from Debian sid, fetched with a
#     private apt configuration (the system's apt sources are not touched)
#     and unpacked under $CACHE (default /opt/podswitch-test)
#   - grpcio/grpcio-tools in .venv and the Python CRI stubs made from api.proto
#
#   scripts/setup-containerd.sh             install what is missing
#   scripts/setup-containerd.sh --refresh   fetch sid's current packages again
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${PODSWITCH_TEST_CACHE:-/opt/podswitch-test}"
APT_DIR="$CACHE/apt"
CONTAINERD_DIR="$CACHE/containerd"
CRI_API_DIR="$CACHE/cri-api"
PROTO="$CRI_API_DIR/usr/share/gocode/src/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto"
refresh=0
[[ "${1:-}" == "--refresh" ]] && refresh=1

log() { echo "setup-containerd: $*"; }

# 1. Bookworm packages: the OCI runtime containerd's shim calls, the
#    reference IPAM plugin, and a static busybox for the local pause image.
pkgs=(runc containernetworking-plugins busybox-static util-linux debian-archive-keyring python3-venv)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -q
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
fi

# The major version of the unpacked containerd; empty if there is none.
containerd_major() {
  [[ -x "$CONTAINERD_DIR/usr/bin/containerd" ]] || return 0
  { "$CONTAINERD_DIR/usr/bin/containerd" --version 2>/dev/null || true; } \
    | sed -nE 's/.* v?([0-9]+)\.[0-9]+\.[0-9]+.*/\1/p'
}

# 2. containerd 2.x and the CRI api.proto from sid, unpacked (not installed).
major=$(containerd_major)
if ((refresh)) || [[ -z "$major" || "$major" -lt 2 || ! -f "$PROTO" ]]; then
  mkdir -p "$APT_DIR/sources" "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/debs"
  cat > "$APT_DIR/sources/sid.sources" <<SOURCES
Types: deb
URIs: http://deb.debian.org/debian
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  apt_private=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$APT_DIR/sources"
               -o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache=$APT_DIR/cache"
               -o Dir::Etc::PreferencesParts=/dev/null -o Dir::Etc::Preferences=/dev/null)
  log "updating the private sid package lists in $APT_DIR"
  apt-get "${apt_private[@]}" update -q >/dev/null
  version=$(apt-cache "${apt_private[@]}" show --no-all-versions containerd | sed -n 's/^Version: //p')
  case "$version" in
    2.*) ;;
    "") log "sid has no containerd package"; exit 1 ;;
    *) log "sid's containerd is $version, not 2.x"; exit 1 ;;
  esac
  rm -f "$APT_DIR"/debs/*.deb
  # apt drops privileges to _apt for downloads; let it write there.
  chown _apt "$APT_DIR/debs" 2>/dev/null || true
  log "downloading containerd $version and golang-github-kubernetes-cri-api-dev"
  (cd "$APT_DIR/debs" && apt-get "${apt_private[@]}" -q download containerd golang-github-kubernetes-cri-api-dev)
  for pair in "containerd:$CONTAINERD_DIR" "golang-github-kubernetes-cri-api-dev:$CRI_API_DIR"; do
    pkg=${pair%%:*} dest=${pair#*:}
    rm -rf "$dest.new"
    dpkg-deb -x "$APT_DIR"/debs/"${pkg}"_*.deb "$dest.new"
    rm -rf "$dest"
    mv "$dest.new" "$dest"
  done
  rm -f "$APT_DIR"/debs/*.deb
  # A binary built for a newer libc than this system's fails here, not in the test.
  if ! "$CONTAINERD_DIR/usr/bin/containerd" --version; then
    log "sid's containerd does not run on this system"
    exit 1
  fi
  [[ "$(containerd_major)" -ge 2 ]] || { log "unpacked containerd is not 2.x"; exit 1; }
fi

# 3. The CRI client: grpcio in the project's venv, stubs compiled from api.proto.
if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import grpc, grpc_tools' 2>/dev/null; then
  log "installing grpcio and grpcio-tools into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -r tests/integration/cri/requirements.txt
fi
PODSWITCH_TEST_CACHE="$CACHE" .venv/bin/python tests/integration/cri/stubs.py --proto "$PROTO"
log "ready: $("$CONTAINERD_DIR/usr/bin/containerd" --version)"
