#!/usr/bin/env bash
# A one-node Apache Kafka broker (KRaft, broker+controller in one JVM) for
# development and the integration tests, with no Docker and no tarball:
# Maven fetches the broker jars once (deploy/kafka/pom.xml) into a cache.
#
#   bash scripts/kafka.sh up       start (no-op when it already answers), wait until ready
#   bash scripts/kafka.sh down     stop the broker this script started (no-op when none)
#   bash scripts/kafka.sh status   say whether 127.0.0.1:$KAFKA_PORT answers; exit 0 iff it does
#
# Environment:
#   KAFKA_PORT                 client listener port (default 9092)
#   SFA_KAFKA_CONTROLLER_PORT  controller listener port (default KAFKA_PORT+1)
#   SFA_KAFKA_HOME             cache dir for jars, data, logs (default <repo>/.cache/kafka)
#   SFA_KAFKA_HEAP             JVM heap flags (default "-Xms256m -Xmx768m")
#   SFA_KAFKA_START_TIMEOUT    seconds to wait for readiness (default 90)
# Names avoid the KAFKA_ prefix on purpose: the service passes every other
# KAFKA_* variable to librdkafka, which would reject these.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="${SFA_KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
HOME_DIR="${SFA_KAFKA_HOME:-$REPO/.cache/kafka}"
HEAP="${SFA_KAFKA_HEAP:--Xms256m -Xmx768m}"
START_TIMEOUT="${SFA_KAFKA_START_TIMEOUT:-90}"
POM="$REPO/deploy/kafka/pom.xml"
LIBS="$HOME_DIR/libs"
NODE="$HOME_DIR/node-$PORT"
CONF="$NODE/server.properties"
PIDFILE="$NODE/kafka.pid"
LOG="$NODE/kafka.log"
BOOTSTRAP="127.0.0.1:$PORT"

say() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# --- probing -----------------------------------------------------------------

PROBE_PY=""
# Sets PROBE_PY to a python that has confluent-kafka (the project venv first).
find_python() {
    local py
    [[ -n "$PROBE_PY" ]] && return 0
    for py in "$REPO/.venv/bin/python" python3; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import confluent_kafka' 2>/dev/null; then
            PROBE_PY="$py"
            return 0
        fi
    done
    return 1
}

# Exit 0 when a real metadata request succeeds (an open port alone is not
# enough: the socket opens before the broker is unfenced and can serve).
answers() {
    # Cheap first: nothing listens yet, so skip the client's connect timeout.
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || return 1
    if find_python; then
        timeout 10 "$PROBE_PY" - "$BOOTSTRAP" 2>/dev/null <<'PY'
import sys
from confluent_kafka.admin import AdminClient

admin = AdminClient(
    {"bootstrap.servers": sys.argv[1], "log_level": 0, "reconnect.backoff.max.ms": 200}
)
metadata = admin.list_topics(timeout=2)
sys.exit(0 if metadata.brokers else 1)
PY
    else
        # No client library: the port is open and the broker logged that it started.
        grep -q 'Kafka Server started' "$LOG" 2>/dev/null
    fi
}

# The pid in the pid file, if that process is alive and really our broker.
our_pid() {
    local pid
    [[ -f "$PIDFILE" ]] || return 1
    pid="$(cat "$PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$CONF" || return 1
    echo "$pid"
}

# --- one-time setup ----------------------------------------------------------

fetch_libs() {
    # Keyed by the pom's hash, so changing the Kafka version refetches.
    local want have=""
    want="$(sha256sum "$POM" | cut -d' ' -f1)"
    [[ -f "$LIBS/.complete" ]] && have="$(cat "$LIBS/.complete")"
    [[ "$have" == "$want" ]] && return 0
    command -v mvn >/dev/null || die "mvn not found; it is needed once to fetch the broker jars"
    say "fetching Apache Kafka jars with Maven into $LIBS (once)"
    rm -rf "$LIBS.tmp"
    mkdir -p "$HOME_DIR"
    if ! mvn -B -f "$POM" dependency:copy-dependencies -DoutputDirectory="$LIBS.tmp" \
        >"$HOME_DIR/maven.log" 2>&1; then
        grep -E 'ERROR|BUILD' "$HOME_DIR/maven.log" | head -n 20 >&2 || true
        die "maven could not fetch the broker jars (full log: $HOME_DIR/maven.log)"
    fi
    rm -rf "$LIBS"
    mv "$LIBS.tmp" "$LIBS"
    echo "$want" >"$LIBS/.complete"
}

write_config() {
    mkdir -p "$NODE"
    sed -e "s|@PORT@|$PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" \
        -e "s|@DATA_DIR@|$NODE/data|g" "$REPO/deploy/kafka/server.properties" >"$CONF"
}

java_cmd() {
    # Sets JAVA to the JVM command line (an array, so paths may contain spaces).
    # shellcheck disable=SC2206  # HEAP is a list of flags
    JAVA=(java $HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
        -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=$REPO/deploy/kafka/log4j2.xml"
        "-Dkafka.logs.dir=$NODE/logs"
        -cp "$LIBS/*")
}

format_storage() {
    [[ -f "$NODE/data/meta.properties" ]] && return 0
    local cluster_id
    # A Kafka Uuid: 16 random bytes, url-safe base64 without padding; Kafka's own
    # generator rejects ids starting with '-' because the CLI would read a flag.
    cluster_id="$(python3 -c '
import base64, uuid
while True:
    s = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    if not s.startswith("-"):
        print(s)
        break
')"
    say "formatting KRaft storage in $NODE/data (cluster id $cluster_id)"
    rm -rf "$NODE/data"
    java_cmd
    "${JAVA[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$CONF" >>"$LOG" 2>&1 9>&- \
        || { tail -n 20 "$LOG" >&2; die "storage format failed"; }
}

# --- commands ----------------------------------------------------------------

cmd_up() {
    if answers; then
        say "already answering on $BOOTSTRAP"
        return 0
    fi
    command -v java >/dev/null || die "java not found (Java 17+ is needed to run the broker)"
    mkdir -p "$HOME_DIR"
    local pid started
    started=$(date +%s)
    if ! pid="$(our_pid)"; then
        fetch_libs
        write_config
        [[ -f "$LOG" ]] && mv -f "$LOG" "$LOG.1"
        format_storage
        say "starting broker on $BOOTSTRAP (controller 127.0.0.1:$CONTROLLER_PORT), log $LOG"
        # setsid: a Ctrl-C in the terminal or pytest must not kill the shared broker;
        # all three streams go to files so callers capturing our output never hang,
        # and fd 9 (the flock) is closed so the broker does not hold the lock.
        java_cmd
        rm -f "$PIDFILE" # a stale one would be read below as the new pid
        setsid bash -c "echo \$\$ >$(printf %q "$PIDFILE"); exec $(printf '%q ' "${JAVA[@]}") kafka.Kafka $(printf %q "$CONF")" \
            </dev/null >>"$LOG" 2>&1 9>&- &
        for _ in $(seq 1 50); do
            [[ -s "$PIDFILE" ]] && break
            sleep 0.1
        done
        pid="$(cat "$PIDFILE" 2>/dev/null)" || die "the broker process did not start (log: $LOG)"
    else
        say "broker process $pid exists; waiting for it to answer"
    fi
    local deadline=$((started + START_TIMEOUT)) now
    while true; do
        if answers; then
            say "ready on $BOOTSTRAP after $(($(date +%s) - started)) s (pid $pid)"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$LOG" >&2 || true
            die "broker exited during start-up (log: $LOG)"
        fi
        now=$(date +%s)
        ((now < deadline)) || { tail -n 30 "$LOG" >&2; die "not ready after ${START_TIMEOUT} s (log: $LOG)"; }
        say "waiting for the broker... $((now - started)) s"
        sleep 1
    done
}

cmd_down() {
    local pid
    if ! pid="$(our_pid)"; then
        rm -f "$PIDFILE"
        say "no broker started by this script is running on port $PORT"
        return 0
    fi
    say "stopping broker (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "still running after 30 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$PIDFILE"
    say "stopped"
}

cmd_status() {
    if answers; then
        local pid
        if pid="$(our_pid)"; then
            echo "kafka: answering on $BOOTSTRAP (pid $pid, data $NODE)"
        else
            echo "kafka: answering on $BOOTSTRAP (not started by this script)"
        fi
        return 0
    fi
    if pid="$(our_pid)"; then
        echo "kafka: process $pid running but not answering on $BOOTSTRAP yet (log $LOG)"
    else
        echo "kafka: not running on $BOOTSTRAP"
    fi
    return 1
}

main() {
    local cmd="${1:-}"
    case "$cmd" in
        up | down)
            # Serialise up/down: CI and a pytest session may both call `up` at once.
            mkdir -p "$HOME_DIR"
            exec 9>"$HOME_DIR/.lock-$PORT"
            flock -w 180 9 || die "another kafka.sh holds $HOME_DIR/.lock-$PORT"
            "cmd_$cmd"
            ;;
        status) cmd_status ;;
        *)
            echo "usage: $0 up|down|status" >&2
            exit 2
            ;;
    esac
}

main "$@"
