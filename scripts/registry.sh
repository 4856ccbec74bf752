#!/usr/bin/env bash
# A schema registry for development and the integration tests, with no Docker:
# Apicurio Registry 3.0.9 (in memory, or in a file with SFA_REGISTRY_DATA), fetched
# once from Maven Central into a cache, run on the installed Java 17 (3.3.x would need
# Java 21).
#
#   bash scripts/registry.sh up       start (no-op when it already answers), wait until ready
#   bash scripts/registry.sh down     stop the registry this script started (no-op when none)
#   bash scripts/registry.sh status   say whether 127.0.0.1:$SFA_REGISTRY_PORT answers; exit 0 iff it does
#   bash scripts/registry.sh url      print the base URL clients are given (Confluent API)
#
# Why these steps: Apicurio publishes the runnable application only as the `all`
# tar.gz attached to io.apicurio:apicurio-registry-app (its main jar does not run
# alone). maven-dependency-plugin 2.8's `get` fetches that one file; the 3.x plugin
# fails because it resolves the 3.0.9 parent POM, which is not served.
#
# Storage is in memory by default: a restart forgets every schema. With
# SFA_REGISTRY_DATA=DIR it is an H2 database file in DIR instead, kept across restarts
# (the outage test stops and starts it). Its Confluent-compatible API lives under
# /apis/ccompat/v7; its default compatibility is NONE, so producers set the one they
# want on their subject.
#
# Environment:
#   SFA_REGISTRY_PORT           HTTP port (default 8081)
#   SFA_REGISTRY_HOME           cache dir for the app, logs, pid (default <repo>/.cache/registry)
#   SFA_REGISTRY_HEAP           JVM heap flags (default "-Xmx256m")
#   SFA_REGISTRY_START_TIMEOUT  seconds to wait for readiness (default 90)
#   SFA_REGISTRY_DATA           a directory: keep the schemas there (H2 file); unset: in memory
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION=3.0.9
HOME_DIR="${SFA_REGISTRY_HOME:-$REPO/.cache/registry}"
PORT="${SFA_REGISTRY_PORT:-8081}"
HEAP="${SFA_REGISTRY_HEAP:--Xmx256m}"
START_TIMEOUT="${SFA_REGISTRY_START_TIMEOUT:-90}"
DATA="${SFA_REGISTRY_DATA:-}"
APP="$HOME_DIR/app-$VERSION"
RUNNER="$APP/apicurio-registry-app-$VERSION-runner.jar"
NODE="$HOME_DIR/node-$PORT"
PIDFILE="$NODE/registry.pid"
LOG="$NODE/registry.log"
LOCK="$HOME_DIR/.lock-$PORT"
BASE="http://127.0.0.1:$PORT"

say() { printf 'registry.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Ready means the Confluent API answers a real request, not just an open port.
answers() {
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || return 1
    curl -fsS --max-time 3 "$BASE/apis/ccompat/v7/subjects" >/dev/null 2>&1
}

# The pid in the pid file, if that process is alive and really our registry.
our_pid() {
    local pid
    [[ -f "$PIDFILE" ]] || return 1
    pid="$(cat "$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "quarkus.http.port=$PORT" || return 1
    echo "$pid"
}

fetch_app() {
    [[ -f "$APP/.complete" && -f "$RUNNER" ]] && return 0
    command -v mvn >/dev/null || die "mvn not found; it is needed once to fetch Apicurio Registry"
    mkdir -p "$HOME_DIR"
    local m2="$HOME_DIR/m2"
    local tarball="$m2/io/apicurio/apicurio-registry-app/$VERSION/apicurio-registry-app-$VERSION-all.tar.gz"
    if [[ ! -f "$tarball" ]]; then
        say "fetching Apicurio Registry $VERSION with Maven into $HOME_DIR (once; ~100 MB)"
        if ! mvn -B -Dmaven.repo.local="$m2" \
            org.apache.maven.plugins:maven-dependency-plugin:2.8:get \
            -Dartifact="io.apicurio:apicurio-registry-app:$VERSION:tar.gz:all" \
            -Dtransitive=false >"$HOME_DIR/maven.log" 2>&1; then
            grep -E 'ERROR|BUILD' "$HOME_DIR/maven.log" | head -n 20 >&2 || true
            die "maven could not fetch Apicurio Registry (full log: $HOME_DIR/maven.log)"
        fi
    fi
    [[ -f "$tarball" ]] || die "maven finished but $tarball is missing (log: $HOME_DIR/maven.log)"
    rm -rf "$APP.tmp"
    mkdir -p "$APP.tmp"
    tar -xzf "$tarball" -C "$APP.tmp"
    local jar
    jar="$(find "$APP.tmp" -name "apicurio-registry-app-$VERSION-runner.jar" | head -n 1)"
    [[ -n "$jar" ]] || die "no runner jar in $tarball"
    # The tarball's layout (a top directory or not) is flattened to $APP.
    local top
    top="$(dirname "$jar")"
    rm -rf "$APP"
    mv "$top" "$APP"
    rm -rf "$APP.tmp"
    touch "$APP/.complete"
}

cmd_up() {
    if answers; then
        say "already answering on $BASE"
        return 0
    fi
    command -v java >/dev/null || die "java not found (Java 17+ is needed to run the registry)"
    command -v curl >/dev/null || die "curl not found (it asks the registry whether it is ready)"
    local pid started
    started=$(date +%s)
    if ! pid="$(our_pid)"; then
        fetch_app
        mkdir -p "$NODE"
        [[ -f "$LOG" ]] && mv -f "$LOG" "$LOG.1"
        local storage=""
        if [[ -n "$DATA" ]]; then
            mkdir -p "$DATA"
            storage="-Dapicurio.datasource.url=jdbc:h2:file:$(cd "$DATA" && pwd)/registry"
            say "starting Apicurio Registry $VERSION on $BASE (schemas kept in $DATA), log $LOG"
        else
            say "starting Apicurio Registry $VERSION on $BASE (in memory), log $LOG"
        fi
        rm -f "$PIDFILE"
        # setsid: a Ctrl-C in the terminal or pytest must not kill the shared registry;
        # every stream goes to the log, and fd 9 (the flock) is not inherited.
        # shellcheck disable=SC2086  # HEAP is a list of flags
        (
            cd "$NODE"
            setsid bash -c "echo \$\$ >$(printf %q "$PIDFILE"); exec java $HEAP \
                -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port=$PORT ${storage:+$(printf %q "$storage")} \
                -jar $(printf %q "$RUNNER")" </dev/null >>"$LOG" 2>&1 9>&- &
        )
        for _ in $(seq 1 50); do
            [[ -s "$PIDFILE" ]] && break
            sleep 0.1
        done
        pid="$(cat "$PIDFILE" 2>/dev/null)" || die "the registry process did not start (log: $LOG)"
    else
        say "registry process $pid exists; waiting for it to answer"
    fi
    local deadline=$((started + START_TIMEOUT)) now
    while true; do
        if answers; then
            say "ready on $BASE after $(($(date +%s) - started)) s (pid $pid)"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$LOG" >&2 || true
            die "registry exited during start-up (log: $LOG)"
        fi
        now=$(date +%s)
        ((now < deadline)) || { tail -n 30 "$LOG" >&2; die "not ready after ${START_TIMEOUT} s (log: $LOG)"; }
        sleep 0.5
    done
}

cmd_down() {
    local pid
    if ! pid="$(our_pid)"; then
        rm -f "$PIDFILE"
        say "no registry started by this script is running on port $PORT"
        return 0
    fi
    say "stopping registry (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "still running after 20 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$PIDFILE"
    say "stopped"
}

cmd_status() {
    local pid
    if answers; then
        if pid="$(our_pid)"; then
            echo "registry: answering on $BASE (pid $pid)"
        else
            echo "registry: answering on $BASE (not started by this script)"
        fi
        return 0
    fi
    if pid="$(our_pid)"; then
        echo "registry: process $pid running but not answering on $BASE yet (log $LOG)"
    else
        echo "registry: not running on $BASE"
    fi
    return 1
}

# Serialise up/down: CI and a pytest session may both call `up` at once.
locked() {
    mkdir -p "$HOME_DIR"
    exec 9>"$LOCK"
    flock -w 300 9 || die "another registry.sh holds $LOCK"
    "$@"
}

case "${1:-}" in
    up | down) locked "cmd_$1" ;;
    status) cmd_status ;;
    url) echo "$BASE/apis/ccompat/v7" ;;
    *)
        echo "usage: $0 up|down|status|url" >&2
        exit 2
        ;;
esac
