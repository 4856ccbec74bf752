#!/usr/bin/env bash
# Toxiproxy (Shopify's TCP fault proxy) for the network-fault drills: it sits between
# `sfa run` and the broker and adds latency, caps bandwidth, resets or blackholes
# connections on command (tests/integration/faults.py drives its HTTP API).
#
# No binary release is reachable here, so the Go toolchain builds the pinned version
# from the Go module proxy once (about 30 s) into a cache.
#
#   bash scripts/toxiproxy.sh up       build when missing, start, wait until the API answers
#   bash scripts/toxiproxy.sh down     stop the server this script started (no-op when none)
#   bash scripts/toxiproxy.sh status   exit 0 iff the API answers
#   bash scripts/toxiproxy.sh path     print the binary's path (building it when missing)
#
# Environment:
#   SFA_TOXIPROXY_PORT   API port on 127.0.0.1 (default 8474)
#   SFA_TOXIPROXY_HOME   cache dir for the binary, pid and log (default <repo>/.cache/toxiproxy)
set -euo pipefail

VERSION=v2.5.0
MODULE=github.com/Shopify/toxiproxy/v2/cmd/server
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOME_DIR="${SFA_TOXIPROXY_HOME:-$REPO/.cache/toxiproxy}"
PORT="${SFA_TOXIPROXY_PORT:-8474}"
BIN="$HOME_DIR/bin/toxiproxy-server-$VERSION"
PIDFILE="$HOME_DIR/toxiproxy-$PORT.pid"
LOG="$HOME_DIR/toxiproxy-$PORT.log"

say() { printf 'toxiproxy.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

answers() { curl -fsS -m 2 "http://127.0.0.1:$PORT/version" >/dev/null 2>&1; }

build() {
    [[ -x "$BIN" ]] && return 0
    command -v go >/dev/null || die "go not found (the Go toolchain builds Toxiproxy $VERSION)"
    mkdir -p "$HOME_DIR/bin"
    say "building Toxiproxy $VERSION from the Go module proxy (once)"
    local tmp
    tmp="$(mktemp -d "$HOME_DIR/build.XXXXXX")"
    if ! GOBIN="$tmp" GOFLAGS=-modcacherw go install "$MODULE@$VERSION" >"$HOME_DIR/build.log" 2>&1; then
        tail -n 20 "$HOME_DIR/build.log" >&2
        rm -rf "$tmp"
        die "go install $MODULE@$VERSION failed (log: $HOME_DIR/build.log)"
    fi
    mv "$tmp/server" "$BIN"
    rm -rf "$tmp"
}

our_pid() {
    local pid
    pid="$(cat "$PIDFILE" 2>/dev/null)" || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

cmd_up() {
    if answers; then
        say "already answering on 127.0.0.1:$PORT"
        return 0
    fi
    build
    # setsid: a Ctrl-C in pytest's terminal must not take the proxy down mid-drill.
    setsid "$BIN" -host 127.0.0.1 -port "$PORT" </dev/null >"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 100); do
        if answers; then
            say "ready on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"
            return 0
        fi
        kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { tail -n 20 "$LOG" >&2; die "exited at start (log: $LOG)"; }
        sleep 0.1
    done
    die "not answering after 10 s (log: $LOG)"
}

cmd_down() {
    local pid
    if ! pid="$(our_pid)"; then
        rm -f "$PIDFILE"
        say "no Toxiproxy started by this script is running on port $PORT"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$PIDFILE"
    say "stopped"
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
status) answers && say "answering on 127.0.0.1:$PORT" || { say "not answering on 127.0.0.1:$PORT"; exit 1; } ;;
path) build && echo "$BIN" ;;
*) die "usage: $0 up|down|status|path" ;;
esac
