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

CACHE_ROOT="${TETHER_KUBE_BIN_DIR:-$HOME/.cache/tether/kube-bin}"
mkdir -p "$CACHE_ROOT"
CACHE_ROOT="$(cd "$CACHE_ROOT" && pwd -P)"
DEST="$CACHE_ROOT/helm-${HELM_VERSION}"

if [[ -x "$DEST/helm" ]]; then
    printf '%s\n' "$DEST/helm"
    exit 0
fi

GO="${GO:-}"
if [[ -z "$GO" ]]; then
    if command -v go >/dev/null 2>&1; then
        GO="$(command -v go)"
    elif [[ -x /usr/local/go/bin/go ]]; then
        GO=/usr/local/go/bin/go
    fi
fi
go_missing() {
    log "ERROR: $1"
    log "Install Go >= 1.${REQUIRED_GO_MINOR} (https://go.dev/dl/) to build helm ${HELM_VERSION}."
    exit 3
}
[[ -n "$GO" ]] || go_missing "'go' was not found on PATH."
[[ -x "$GO" ]] || command -v "$GO" >/dev/null 2>&1 || go_missing "GO=$GO is not executable."
go_ver="$("$GO" env GOVERSION 2>/dev/null || true)"
if [[ "$go_ver" =~ ^go1\.([0-9]+) ]] && ((BASH_REMATCH[1] < 21)); then
    go_missing "$go_ver is too old."
fi

if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE_ROOT/.helm.lock"
    flock 9
    if [[ -x "$DEST/helm" ]]; then
        printf '%s\n' "$DEST/helm"
        exit 0
    fi
fi

TMP="$(mktemp -d "$CACHE_ROOT/.helm-build.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
start=$SECONDS
log "building helm ${HELM_VERSION} (helm.sh/helm/v3/cmd/helm) with $("$GO" version)"
(cd "$TMP" && GOBIN="$TMP/bin" GOWORK=off CGO_ENABLED=0 GOFLAGS=-trimpath \
    "$GO" install -ldflags='-s -w' "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}")
"$TMP/bin/helm" version >&2
chmod 755 "$TMP/bin"
rm -rf "$DEST"
mv "$TMP/bin" "$DEST"
log "done in $((SECONDS - start))s"
printf '%s\n' "$DEST/helm"
