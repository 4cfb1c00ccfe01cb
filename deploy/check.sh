#!/usr/bin/env bash
# Checks deploy/ offline, each with a real tool: `kubectl kustomize` renders every overlay;
# `kubernetes-validate` checks every rendered object against the pinned Kubernetes schema
# (strict: unknown fields fail); `checkov` scans them (any failed check fails; every
# skipped check carries its reason in a `checkov.io/skipN` annotation). The two Python
# tools are installed, pinned, in a virtual environment under target/ when missing.
# (`folio serve --check-config` over each rendered container runs in the test suite:
# tests/tests/deploy.rs.)
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VERSION=1.32.0
CHECKOV_VERSION=3.3.30
KUBERNETES_VALIDATE_VERSION=1.37.0
venv=target/ci-venv
out=target/deploy-rendered

log() { echo "==> $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v kubectl >/dev/null; then
  log "installing kubernetes-client (kubectl)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq kubernetes-client >/dev/null
fi
have() { "$venv/bin/pip" show "$1" 2>/dev/null | grep -q "^Version: $2\$"; }
if ! have checkov "$CHECKOV_VERSION" || ! have kubernetes-validate "$KUBERNETES_VALIDATE_VERSION"; then
  log "installing checkov $CHECKOV_VERSION and kubernetes-validate $KUBERNETES_VALIDATE_VERSION (PyPI, in $venv)"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install -q "checkov==$CHECKOV_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

mkdir -p "$out"
for overlay in deploy/overlays/*/; do
  name=$(basename "$overlay")
  log "kubectl kustomize $overlay"
  kubectl kustomize "$overlay" > "$out/$name.yaml"
  echo "  $(grep -c '^kind:' "$out/$name.yaml") objects" >&2
  log "kubernetes-validate (Kubernetes $KUBERNETES_VERSION, strict) $name"
  "$venv/bin/kubernetes-validate" --kubernetes-version "$KUBERNETES_VERSION" --strict --quiet "$out/$name.yaml"
done
log "checkov (Kubernetes framework) over every overlay"
files=()
for f in "$out"/*.yaml; do files+=(-f "$f"); done
"$venv/bin/checkov" "${files[@]}" --framework kubernetes --compact --quiet --skip-download
log "deploy/ checks passed"
