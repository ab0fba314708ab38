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
# shellcheck source=../cache.sh
source "$HERE/../cache.sh"

KEY="$(sha256sum "$HERE/package-lock.json" | cut -c1-16)"
cache_root "${TETHER_LINT_DIR:-$HOME/.cache/tether/api-lint}"
DEST="$CACHE_ROOT/$KEY"
RESULT="$DEST/node_modules/.bin"
complete() { [[ -x "$DEST/node_modules/.bin/redocly" && -x "$DEST/node_modules/.bin/asyncapi" ]]; }
cache_hit

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    log "ERROR: node and npm are needed to install the API linters (apt-get install nodejs npm)."
    exit 3
fi
cache_lock install
cache_tmp install

start=$SECONDS
cp "$HERE/package.json" "$HERE/package-lock.json" "$TMP/"
log "npm ci in $TMP ($(node --version), npm $(npm --version))"
# --ignore-scripts: nothing from the registry runs at install time; both linters are plain JavaScript.
(cd "$TMP" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
"$TMP/node_modules/.bin/redocly" --version >&2
"$TMP/node_modules/.bin/asyncapi" --version >&2
cache_install "$TMP"
cache_done "$start"
