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

CACHE_ROOT="${TETHER_NATSCLI_DIR:-$HOME/.cache/tether/natscli}"
mkdir -p "$CACHE_ROOT"
CACHE_ROOT="$(cd "$CACHE_ROOT" && pwd -P)"
DEST="$CACHE_ROOT/${NATSCLI_VERSION}"

complete() { [[ -x "$DEST/nats" ]]; }

if complete; then
    printf '%s\n' "$DEST/nats"
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
    log "Install Go >= 1.${REQUIRED_GO_MINOR} (https://go.dev/dl/) to build the nats CLI ${NATSCLI_VERSION}."
    log "Without it the nats CLI tests (-m clients) are skipped locally."
    exit 3
}
[[ -n "$GO" ]] || go_missing "'go' was not found on PATH."
[[ -x "$GO" ]] || command -v "$GO" >/dev/null 2>&1 || go_missing "GO=$GO is not executable."
go_ver="$("$GO" env GOVERSION 2>/dev/null || true)"
if [[ "$go_ver" =~ ^go1\.([0-9]+) ]] && ((BASH_REMATCH[1] < 21)); then
    go_missing "$go_ver is too old (no automatic toolchain switching)."
fi

# One build per machine at a time; the loser of the race finds the cache complete.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE_ROOT/.lock"
    if ! flock -n 9; then
        log "another build is running; waiting for $CACHE_ROOT/.lock"
        flock 9
    fi
    if complete; then
        printf '%s\n' "$DEST/nats"
        exit 0
    fi
    rm -rf "$CACHE_ROOT"/.build.* # leftovers of killed builds; we hold the lock
fi

TMP="$(mktemp -d "$CACHE_ROOT/.build.XXXXXX")" # same filesystem -> atomic rename
trap 'rm -rf "$TMP"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start=$SECONDS
log "building nats CLI ${NATSCLI_VERSION} (github.com/nats-io/natscli/nats) with $("$GO" version)"
(cd "$TMP" && GOBIN="$TMP/bin" GOWORK=off CGO_ENABLED=0 GOFLAGS=-trimpath \
    "$GO" install -ldflags="-s -w -X main.version=${NATSCLI_VERSION#v}" \
    "github.com/nats-io/natscli/nats@${NATSCLI_VERSION}")
"$TMP/bin/nats" --version >&2
chmod 755 "$TMP/bin"
if [[ -e "$DEST" ]] && ! complete; then
    rm -rf "$DEST"
fi
if [[ ! -e "$DEST" ]]; then
    mv "$TMP/bin" "$DEST" # rename(2): readers see no binary or the whole one
fi
complete || { log "ERROR: $DEST is incomplete after the build"; exit 1; }
log "done in $((SECONDS - start))s"
printf '%s\n' "$DEST/nats"
