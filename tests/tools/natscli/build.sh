#!/usr/bin/env bash
# Build the official `nats` CLI (github.com/nats-io/natscli) from the Go module proxy and cache it
# outside the repository, like tests/tools/kubebin/build.sh does for kube-apiserver and etcd.
#
#   tests/tools/natscli/build.sh        -> prints the path of the nats binary (last stdout line)
#
# Cache: ${TETHER_NATSCLI_DIR:-$HOME/.cache/tether/natscli}/<version>/nats
# Pinned to v0.5.0 on purpose (v0.5.1 is not used: see issue 15). A cache hit needs no Go toolchain.
# Exit codes: 0 ok, 3 Go toolchain missing/too old, anything else = build failure. Progress goes to stderr.
set -euo pipefail

NATSCLI_VERSION=v0.5.0
REQUIRED_GO_MINOR=24

log() { printf '[natscli] %s\n' "$*" >&2; }
# shellcheck source=../cache.sh
source "$(dirname "${BASH_SOURCE[0]}")/../cache.sh"

cache_root "${TETHER_NATSCLI_DIR:-$HOME/.cache/tether/natscli}"
DEST="$CACHE_ROOT/${NATSCLI_VERSION}"
RESULT="$DEST/nats"
complete() { [[ -x "$DEST/nats" ]]; }
cache_hit

find_go "$REQUIRED_GO_MINOR" "the nats CLI ${NATSCLI_VERSION}" "Without it the nats CLI tests (-m clients) are skipped locally."
cache_lock build
cache_tmp build

start=$SECONDS
log "building nats CLI ${NATSCLI_VERSION} (github.com/nats-io/natscli/nats) with $("$GO" version)"
(cd "$TMP" && GOBIN="$TMP/bin" GOWORK=off CGO_ENABLED=0 GOFLAGS=-trimpath \
    "$GO" install -ldflags="-s -w -X main.version=${NATSCLI_VERSION#v}" \
    "github.com/nats-io/natscli/nats@${NATSCLI_VERSION}")
"$TMP/bin/nats" --version >&2
cache_install "$TMP/bin"
cache_done "$start"
