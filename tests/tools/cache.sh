# shellcheck shell=bash
# Shared by the scripts that build or install test tools into a cache outside the repository
# (tests/tools/kubebin/build.sh and helm.sh, tests/tools/natscli/build.sh, tests/tools/lint/install.sh).
# Source it after defining:
#   log       prints a progress line to stderr
#   complete  true when $DEST holds everything the script provides
#   RESULT    what the script prints on stdout when done (a path)
# Then: cache_root DIR; cache_hit (a hit returns at once, no toolchain needed); [find_go ...]; cache_lock TAG;
# cache_tmp TAG; build into $TMP; cache_install (or the script's own renames); cache_done.

# cache_root DIR: create the cache root and resolve it (CACHE_ROOT).
cache_root() {
    mkdir -p "$1"
    CACHE_ROOT="$(cd "$1" && pwd -P)"
}

# cache_hit: when the cache is complete, print RESULT and exit 0.
cache_hit() {
    if complete; then
        printf '%s\n' "$RESULT"
        exit 0
    fi
}

# find_go MINOR WHAT [NOTE]: the Go toolchain in GO ($GO, PATH, /usr/local/go); exit 3 with a clear message when
# it is missing or cannot reach go1.MINOR (older than 1.21 cannot switch toolchains; GOTOOLCHAIN=local forbids it).
find_go() {
    local minor="$1" what="$2" note="${3:-}" version
    go_missing() {
        log "ERROR: $1"
        log "Install Go >= 1.${minor} (https://go.dev/dl/) to build ${what}."
        [[ -z "$note" ]] || log "$note"
        exit 3
    }
    GO="${GO:-}"
    if [[ -z "$GO" ]]; then
        if command -v go >/dev/null 2>&1; then
            GO="$(command -v go)"
        elif [[ -x /usr/local/go/bin/go ]]; then
            GO=/usr/local/go/bin/go
        fi
    fi
    [[ -n "$GO" ]] || go_missing "'go' was not found on PATH."
    [[ -x "$GO" ]] || command -v "$GO" >/dev/null 2>&1 || go_missing "GO=$GO is not executable."
    version="$("$GO" env GOVERSION 2>/dev/null || true)" # e.g. go1.26.8
    if [[ ! "$version" =~ ^go1\.([0-9]+) ]]; then
        log "warning: could not parse Go version '${version}', trying anyway"
    elif ((BASH_REMATCH[1] < 21)); then
        go_missing "$version is too old (no automatic toolchain switching)."
    elif ((BASH_REMATCH[1] < minor)); then
        if [[ "$("$GO" env GOTOOLCHAIN)" == local* ]]; then
            go_missing "$version is too old and GOTOOLCHAIN=local forbids downloading go1.${minor}."
        fi
        log "$version < go1.${minor}: Go will download a newer toolchain from the module proxy."
    fi
}

# cache_lock TAG: one build per cache and TAG at a time (flock, where there is one); the loser of the race
# finds the cache complete. Holding the lock, leftovers of killed builds (cache_tmp TAG) go.
cache_lock() {
    command -v flock >/dev/null 2>&1 || return 0
    exec 9>"$CACHE_ROOT/.$1.lock"
    if ! flock -n 9; then
        log "another build is running; waiting for $CACHE_ROOT/.$1.lock"
        flock 9
    fi
    cache_hit
    rm -rf "$CACHE_ROOT/.$1-tmp."*
}

# cache_tmp TAG: a scratch directory TMP on the cache's filesystem (so the result is renamed in atomically),
# removed on exit.
cache_tmp() {
    TMP="$(mktemp -d "$CACHE_ROOT/.$1-tmp.XXXXXX")"
    trap 'rm -rf "$TMP"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# cache_install DIR: make DIR (built in TMP) the cache entry DEST with one rename(2): readers see nothing or
# the whole of it. An incomplete DEST (a killed build of an older script) is replaced.
cache_install() {
    chmod 755 "$1"
    if [[ -e "$DEST" ]] && ! complete; then
        rm -rf "$DEST"
    fi
    if [[ ! -e "$DEST" ]]; then
        mv "$1" "$DEST"
    fi
}

# cache_done START: check the cache is complete, say how long it took, print RESULT.
cache_done() {
    complete || {
        log "ERROR: $DEST is incomplete after the build"
        exit 1
    }
    log "done in $((SECONDS - $1))s"
    printf '%s\n' "$RESULT"
}
