#!/usr/bin/env bash
# Build a real Kubernetes control plane for tests from the Go module proxy and cache
# it outside the repository: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler (like controller-runtime's envtest assets, plus the two controllers)
# and kwok (fake nodes and kubelets).
#
#   tests/tools/kubebin/build.sh        -> prints the cache directory (last stdout line)
#
# Cache: ${TETHER_KUBE_BIN_DIR:-$HOME/.cache/tether/kube-bin}/<k8s>-etcd<etcd>/
#        containing etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
#        kwok (a symlink to kwok-<version> beside it). Built once per machine; a cache
#        hit needs no Go toolchain and returns immediately. A cache holding only some
#        of them (an older version of this script) gets the missing ones added.
# Versions are pinned by the wrapper modules apiserver/go.mod (all three Kubernetes
# commands) and etcd/go.mod (with committed go.sum files), and KWOK_VERSION below
# (kwok is built with plain `go install <module>@<version>`: its own go.mod pins it).
#
# Exit codes: 0 ok (directory printed on stdout), 3 Go toolchain missing/too
# old, anything else = build failure. All progress goes to stderr.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REQUIRED_GO_MINOR=26 # k8s.io/kubernetes v1.36 and etcd v3.6.16 declare "go 1.26.0"

log() { printf '[kubebin] %s\n' "$*" >&2; }
# shellcheck source=../cache.sh
source "$HERE/../cache.sh"

# Version of a module required by a wrapper go.mod (no Go toolchain needed).
mod_version() { # <go.mod> <module path>
    awk -v m="$2" '($1 == m && $2 ~ /^v/) || ($1 == "require" && $2 == m) {
        print ($1 == "require") ? $3 : $2; exit }' "$1"
}

K8S_VERSION="$(mod_version "$HERE/apiserver/go.mod" k8s.io/kubernetes)"
ETCD_VERSION="$(mod_version "$HERE/etcd/go.mod" go.etcd.io/etcd/server/v3)"
if [[ -z "$K8S_VERSION" || -z "$ETCD_VERSION" ]]; then
    log "cannot read pinned versions from $HERE/{apiserver,etcd}/go.mod"
    exit 1
fi

KWOK_VERSION="${TETHER_KWOK_VERSION:-v0.8.0}"
K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler)

cache_root "${TETHER_KUBE_BIN_DIR:-$HOME/.cache/tether/kube-bin}"
DEST="$CACHE_ROOT/${K8S_VERSION#v}-etcd${ETCD_VERSION#v}"
RESULT="$DEST"

has_etcd() { [[ -x "$DEST/etcd" ]]; }
missing_k8s() { # the Kubernetes commands not yet in the cache
    local c
    for c in "${K8S_CMDS[@]}"; do [[ -x "$DEST/$c" ]] || printf '%s\n' "$c"; done
}
has_kwok() { [[ -x "$DEST/kwok-$KWOK_VERSION" && "$(readlink "$DEST/kwok" 2>/dev/null)" == "kwok-$KWOK_VERSION" ]]; }
complete() { has_etcd && [[ -z "$(missing_k8s)" ]] && has_kwok; }

cache_hit

find_go "$REQUIRED_GO_MINOR" "kube-apiserver ${K8S_VERSION} and etcd ${ETCD_VERSION}" \
    "Without it the Kubernetes (kube-apiserver) tests will be skipped locally."
# One build at a time (pytest-xdist workers, two test runs).
cache_lock kube
cache_tmp kube

export CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=readonly
BUILD_FLAGS=(-trimpath -buildvcs=false)

start=$SECONDS

# Each binary is built into $TMP and renamed into $DEST on its own (rename(2) on the
# same filesystem): a killed build leaves only whole binaries behind, and complete()
# wants all of them.
publish() { # <file in $TMP> <name in $DEST>
    mkdir -p "$DEST"
    chmod 755 "$DEST"
    mv -f "$1" "$DEST/$2"
}

# etcd first: it is small (~1-3 min) and makes failures show up early.
if ! has_etcd; then
    log "building etcd ${ETCD_VERSION} (go.etcd.io/etcd/server/v3) with $("$GO" version)"
    (cd "$HERE/etcd" && "$GO" build "${BUILD_FLAGS[@]}" -ldflags='-s -w' \
        -o "$TMP/etcd" go.etcd.io/etcd/server/v3)
    "$TMP/etcd" --version >&2
    publish "$TMP/etcd" etcd
    log "etcd built in $((SECONDS - start))s"
fi

mapfile -t todo < <(missing_k8s)
if ((${#todo[@]})); then
    # Same version stamping as kubernetes' hack/lib/version.sh. gitCommit is left
    # empty (the module proxy does not expose it); buildDate = tag time, so the
    # build is reproducible.
    k8s_minor="$(cut -d. -f2 <<<"${K8S_VERSION#v}")"
    k8s_date="$(cd "$HERE/apiserver" && "$GO" list -m \
        -f '{{with .Time}}{{.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes)"
    ldflags='-s -w'
    for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
        ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION}"
        ldflags+=" -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${k8s_minor}"
        ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.gitCommit="
        if [[ -n "$k8s_date" ]]; then ldflags+=" -X ${pkg}.buildDate=${k8s_date}"; fi
    done
    pkgs=()
    for c in "${todo[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
    t=$SECONDS
    # One `go build` for all of them: they share most packages, so Go compiles those once.
    log "building ${todo[*]} ${K8S_VERSION} (cold Go build cache: ~4 min for kube-apiserver, ~3 min more for the other two on 2 cores)"
    mkdir -p "$TMP/k8s"
    (cd "$HERE/apiserver" && "$GO" build "${BUILD_FLAGS[@]}" -ldflags="$ldflags" -o "$TMP/k8s/" "${pkgs[@]}")
    for c in "${todo[@]}"; do
        "$TMP/k8s/$c" --version >&2
        publish "$TMP/k8s/$c" "$c"
    done
    log "${todo[*]} built in $((SECONDS - t))s"
fi

if ! has_kwok; then
    t=$SECONDS
    log "building kwok ${KWOK_VERSION} (go install sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION})"
    # Outside the wrapper modules: kwok's own go.mod pins its dependencies.
    (cd "$TMP" && GOBIN="$TMP/kwok-bin" GOFLAGS=-trimpath "$GO" install -ldflags='-s -w' \
        "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}")
    "$TMP/kwok-bin/kwok" --version >&2 || true
    publish "$TMP/kwok-bin/kwok" "kwok-$KWOK_VERSION"
    ln -sfn "kwok-$KWOK_VERSION" "$TMP/kwok-link"
    mv -Tf "$TMP/kwok-link" "$DEST/kwok"
    log "kwok built in $((SECONDS - t))s"
fi

cache_done "$start"
