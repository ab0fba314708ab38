#!/usr/bin/env bash
# Build helm from the Go module proxy (go install, no wrapper module needed) and cache it
# outside the repository, like build.sh does for kube-apiserver and etcd.
#
#   tests/tools/kubebin/helm.sh        -> prints the path of the helm binary (last stdout line)
#
# Cache: ${TETHER_KUBE_BIN_DIR:-$HOME/.cache/tether/kube-bin}/helm-<version>/helm
# Exit codes: 0 ok, 3 Go toolchain missing/too old, anything else = build failure.
# Cold build: about 1.5 min on 2 cores (plus module downloads on a fresh machine).
set -euo pipefail

HELM_VERSION="${TETHER_HELM_VERSION:-v3.22.0}"
REQUIRED_GO_MINOR=25

log() { printf '[kubebin/helm] %s\n' "$*" >&2; }
# shellcheck source=../cache.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cache.sh"

cache_root "${TETHER_KUBE_BIN_DIR:-$HOME/.cache/tether/kube-bin}"
DEST="$CACHE_ROOT/helm-${HELM_VERSION}"
RESULT="$DEST/helm"
complete() { [[ -x "$DEST/helm" ]]; }
cache_hit

find_go "$REQUIRED_GO_MINOR" "helm ${HELM_VERSION}"
cache_lock helm
cache_tmp helm

start=$SECONDS
log "building helm ${HELM_VERSION} (helm.sh/helm/v3/cmd/helm) with $("$GO" version)"
(cd "$TMP" && GOBIN="$TMP/bin" GOWORK=off CGO_ENABLED=0 GOFLAGS=-trimpath \
    "$GO" install -ldflags='-s -w' "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}")
"$TMP/bin/helm" version >&2
cache_install "$TMP/bin"
cache_done "$start"
