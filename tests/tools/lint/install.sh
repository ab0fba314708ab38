#!/usr/bin/env bash
# Install the pinned OpenAPI and AsyncAPI linters (package.json + package-lock.json here) with `npm ci` and
# cache them outside the repository, keyed by the lock file's hash, like tests/tools/kubebin/build.sh.
#
#   tests/tools/lint/install.sh        -> prints the node_modules/.bin directory (last stdout line)
#
# Cache: ${TETHER_LINT_DIR:-$HOME/.cache/tether/api-lint}/<sha256 of package-lock.json, 16 hex>/node_modules
# A cache hit needs no network and returns at once. Exit codes: 0 ok, 3 node/npm missing, else install failure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { printf '[api-lint] %s\n' "$*" >&2; }

KEY="$(sha256sum "$HERE/package-lock.json" | cut -c1-16)"
CACHE_ROOT="${TETHER_LINT_DIR:-$HOME/.cache/tether/api-lint}"
mkdir -p "$CACHE_ROOT"
CACHE_ROOT="$(cd "$CACHE_ROOT" && pwd -P)"
DEST="$CACHE_ROOT/$KEY"

complete() { [[ -x "$DEST/node_modules/.bin/redocly" && -x "$DEST/node_modules/.bin/asyncapi" ]]; }

if complete; then
    printf '%s\n' "$DEST/node_modules/.bin"
    exit 0
fi

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    log "ERROR: node and npm are needed to install the API linters (apt-get install nodejs npm)."
    exit 3
fi

if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE_ROOT/.lock"
    if ! flock -n 9; then
        log "another install is running; waiting for $CACHE_ROOT/.lock"
        flock 9
    fi
    if complete; then
        printf '%s\n' "$DEST/node_modules/.bin"
        exit 0
    fi
    rm -rf "$CACHE_ROOT"/.build.* # leftovers of killed installs; we hold the lock
fi

TMP="$(mktemp -d "$CACHE_ROOT/.build.XXXXXX")" # same filesystem -> atomic rename
trap 'rm -rf "$TMP"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start=$SECONDS
cp "$HERE/package.json" "$HERE/package-lock.json" "$TMP/"
log "npm ci in $TMP ($(node --version), npm $(npm --version))"
# --ignore-scripts: nothing from the registry runs at install time; both linters are plain JavaScript.
(cd "$TMP" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
"$TMP/node_modules/.bin/redocly" --version >&2
"$TMP/node_modules/.bin/asyncapi" --version >&2
chmod 755 "$TMP"
if [[ -e "$DEST" ]] && ! complete; then
    rm -rf "$DEST"
fi
if [[ ! -e "$DEST" ]]; then
    mv "$TMP" "$DEST"
fi
complete || { log "ERROR: $DEST is incomplete after the install"; exit 1; }
log "done in $((SECONDS - start))s"
printf '%s\n' "$DEST/node_modules/.bin"
