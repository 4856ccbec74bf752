#!/usr/bin/env bash
# One-node Apache Kafka brokers (KRaft, broker+controller in one JVM) for
# development and the integration tests, with no Docker and no tarball:
# Maven fetches the broker jars once (deploy/kafka/pom.xml) into a cache.
#
# The plaintext broker (every test and CI use it; open to anyone on 127.0.0.1):
#   bash scripts/kafka.sh up       start (no-op when it already answers), wait until ready
#   bash scripts/kafka.sh down     stop the broker this script started (no-op when none)
#   bash scripts/kafka.sh status   say whether 127.0.0.1:$KAFKA_PORT answers; exit 0 iff it does
#
# The authenticated broker (tests/integration/test_security.py, docs/security.md): a
# SECOND, separate broker with its own ports and node dir; the plaintext one is not
# touched. Listeners: SASL_PLAINTEXT with SCRAM-SHA-512 users (admin, a super user;
# sfa, the service; producer) and SSL (one-way TLS with a CA and broker certificate
# generated here with openssl/keytool), and KRaft's StandardAuthorizer with
# allow.everyone.if.no.acl.found=false (template: deploy/kafka/server-secure.properties).
#   bash scripts/kafka.sh up-secure       start it (no-op when it answers), wait until ready
#   bash scripts/kafka.sh down-secure     stop it (its data, users and certificates stay)
#   bash scripts/kafka.sh status-secure   exit 0 iff admin can authenticate and read metadata
#   bash scripts/kafka.sh env-secure [sasl [USER] | ssl]
#                                         print `export KAFKA_...` lines for `sfa run`:
#                                         SCRAM as USER (default sfa), or TLS (ssl.ca.location)
# Passwords are generated when the node is first formatted (or taken from
# SFA_KAFKA_SECURE_{ADMIN,SFA,PRODUCER}_PASSWORD then) and, with the CA and the
# bootstrap addresses, written to <node dir>/secure.env (mode 600, KEY=VALUE lines).
# Delete the node dir to start over with new users and certificates.
#
# Environment:
#   KAFKA_PORT                 client listener port (default 9092)
#   SFA_KAFKA_CONTROLLER_PORT  controller listener port (default KAFKA_PORT+1)
#   SFA_KAFKA_PROXIED_PORT     a second plaintext listener, for the fault drills
#                              (default KAFKA_PORT+2); it advertises SFA_KAFKA_PROXY_PORT
#   SFA_KAFKA_PROXY_PORT       where a fault proxy forwards to it (default KAFKA_PORT+3;
#                              scripts/toxiproxy.sh, tests/integration/faults.py)
#   SFA_KAFKA_HOME             cache dir for jars, data, logs (default <repo>/.cache/kafka)
#   SFA_KAFKA_HEAP             JVM heap flags (default "-Xms256m -Xmx768m")
#   SFA_KAFKA_START_TIMEOUT    seconds to wait for readiness (default 90)
#   SFA_KAFKA_SECURE_SASL_PORT        SASL_PLAINTEXT listener (default 19392)
#   SFA_KAFKA_SECURE_SSL_PORT         SSL listener (default 19393)
#   SFA_KAFKA_SECURE_CONTROLLER_PORT  controller listener, mutual TLS (default 19394)
#   SFA_KAFKA_SECURE_HEAP             heap of the secure broker (default "-Xms128m -Xmx512m")
#   SFA_KAFKA_SECURE_NODE             its node dir (default $SFA_KAFKA_HOME/node-secure-<sasl port>)
# Names avoid the KAFKA_ prefix on purpose: the service passes every other
# KAFKA_* variable to librdkafka, which would reject these.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOME_DIR="${SFA_KAFKA_HOME:-$REPO/.cache/kafka}"
START_TIMEOUT="${SFA_KAFKA_START_TIMEOUT:-90}"
POM="$REPO/deploy/kafka/pom.xml"
LIBS="$HOME_DIR/libs"
BROKER_CN="sfa-dev-broker"
SCRAM_USERS=(admin sfa producer)

say() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# --- which broker ------------------------------------------------------------
# The commands below work on whichever broker one of these selected.

use_plain() {
    MODE=plain
    LABEL=kafka
    PORT="${KAFKA_PORT:-9092}"
    CONTROLLER_PORT="${SFA_KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
    PROXIED_PORT="${SFA_KAFKA_PROXIED_PORT:-$((PORT + 2))}"
    PROXY_PORT="${SFA_KAFKA_PROXY_PORT:-$((PORT + 3))}"
    HEAP="${SFA_KAFKA_HEAP:--Xms256m -Xmx768m}"
    NODE="$HOME_DIR/node-$PORT"
    TEMPLATE="$REPO/deploy/kafka/server.properties"
    LOCK="$HOME_DIR/.lock-$PORT"
    set_paths
}

use_secure() {
    MODE=secure
    LABEL=kafka-secure
    PORT="${SFA_KAFKA_SECURE_SASL_PORT:-19392}" # readiness is asked over SASL
    SSL_PORT="${SFA_KAFKA_SECURE_SSL_PORT:-19393}"
    CONTROLLER_PORT="${SFA_KAFKA_SECURE_CONTROLLER_PORT:-19394}"
    HEAP="${SFA_KAFKA_SECURE_HEAP:--Xms128m -Xmx512m}"
    NODE="${SFA_KAFKA_SECURE_NODE:-$HOME_DIR/node-secure-$PORT}"
    TEMPLATE="$REPO/deploy/kafka/server-secure.properties"
    LOCK="$HOME_DIR/.lock-secure-$PORT"
    TLS_DIR="$NODE/tls"
    SECURE_ENV="$NODE/secure.env"
    set_paths
}

set_paths() {
    CONF="$NODE/server.properties"
    PIDFILE="$NODE/kafka.pid"
    LOG="$NODE/kafka.log"
    BOOTSTRAP="127.0.0.1:$PORT"
}

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
# enough: the socket opens before the broker is unfenced and can serve). The
# secure broker is asked as admin over SCRAM, so "answers" also means the
# users exist and authentication works.
answers() {
    # Cheap first: nothing listens yet, so skip the client's connect timeout.
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || return 1
    local user="" password=""
    if [[ "$MODE" == secure ]]; then
        load_secure_env || return 1
        user="$SFA_SECURE_ADMIN_USER"
        password="$SFA_SECURE_ADMIN_PASSWORD"
    fi
    if find_python; then
        # The password goes through the environment, not argv (visible in ps).
        SFA_PROBE_USER="$user" SFA_PROBE_PASSWORD="$password" \
            timeout 10 "$PROBE_PY" - "$BOOTSTRAP" 2>/dev/null <<'PY'
import os
import sys
from confluent_kafka.admin import AdminClient

conf = {"bootstrap.servers": sys.argv[1], "log_level": 0, "reconnect.backoff.max.ms": 200}
if os.environ.get("SFA_PROBE_USER"):
    conf.update(
        {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": os.environ["SFA_PROBE_USER"],
            "sasl.password": os.environ["SFA_PROBE_PASSWORD"],
        }
    )
admin = AdminClient(conf)
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
    if [[ "$MODE" == plain ]]; then
        sed -e "s|@PORT@|$PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" \
            -e "s|@PROXIED_PORT@|$PROXIED_PORT|g" -e "s|@PROXY_PORT@|$PROXY_PORT|g" \
            -e "s|@DATA_DIR@|$NODE/data|g" "$TEMPLATE" >"$CONF"
        return 0
    fi
    # Holds the admin and key store passwords: readable by this user only.
    (
        umask 077
        sed -e "s|@SASL_PORT@|$PORT|g" -e "s|@SSL_PORT@|$SSL_PORT|g" \
            -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" -e "s|@DATA_DIR@|$NODE/data|g" \
            -e "s|@TLS_DIR@|$TLS_DIR|g" -e "s|@STORE_PASSWORD@|$SFA_SECURE_STORE_PASSWORD|g" \
            -e "s|@ADMIN_PASSWORD@|$SFA_SECURE_ADMIN_PASSWORD|g" \
            -e "s|@BROKER_PRINCIPAL@|$SFA_SECURE_BROKER_PRINCIPAL|g" \
            -e "s|@BROKER_CN@|$BROKER_CN|g" "$TEMPLATE" >"$CONF"
    )
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
    local scram=() user var
    if [[ "$MODE" == secure ]]; then
        # KRaft keeps SCRAM credentials in the metadata log; adding them here means
        # they exist before the first start, with no unauthenticated window.
        for user in "${SCRAM_USERS[@]}"; do
            var="SFA_SECURE_${user^^}_PASSWORD"
            scram+=(--add-scram "SCRAM-SHA-512=[name=$user,password=${!var}]")
        done
    fi
    java_cmd
    "${JAVA[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$CONF" "${scram[@]}" \
        >>"$LOG" 2>&1 9>&- || { tail -n 20 "$LOG" >&2; die "storage format failed"; }
}

# --- the secure broker's users and certificates --------------------------------

# Sources secure.env (written by write_secure_env); 1 when there is none yet.
load_secure_env() {
    [[ -f "$SECURE_ENV" ]] || return 1
    # shellcheck disable=SC1090  # written by this script, KEY=VALUE lines only
    source "$SECURE_ENV"
}

new_password() { openssl rand -hex 16; }

# Passwords are made once per node: they are baked into the formatted metadata
# and the key stores, so a node without secure.env is started over from scratch.
secure_credentials() {
    if load_secure_env; then
        return 0
    fi
    if [[ -e "$NODE/data" || -e "$TLS_DIR" ]]; then
        say "no $SECURE_ENV: formatting $NODE anew (new users and certificates)"
        rm -rf "$NODE/data" "$TLS_DIR"
    fi
    local user var value
    for user in "${SCRAM_USERS[@]}"; do
        var="SFA_KAFKA_SECURE_${user^^}_PASSWORD"
        value="${!var:-$(new_password)}"
        # The --add-scram syntax splits on ',' and '=' and ']'.
        [[ "$value" =~ ^[A-Za-z0-9._-]{8,}$ ]] || die "$var: use 8 or more of A-Za-z0-9._-"
        printf -v "SFA_SECURE_${user^^}_PASSWORD" '%s' "$value"
        printf -v "SFA_SECURE_${user^^}_USER" '%s' "$user"
    done
    SFA_SECURE_STORE_PASSWORD="$(new_password)"
    SFA_SECURE_BROKER_PRINCIPAL="User:CN=$BROKER_CN"
}

# Rewritten at every start (the ports may have changed); the secrets are kept.
write_secure_env() {
    mkdir -p "$NODE"
    local user
    (
        umask 077
        {
            echo "# The secure dev broker (scripts/kafka.sh up-secure). Secrets: do not commit."
            echo "SFA_SECURE_SASL_BOOTSTRAP=127.0.0.1:$PORT"
            echo "SFA_SECURE_SSL_BOOTSTRAP=127.0.0.1:$SSL_PORT"
            echo "SFA_SECURE_CA_LOCATION=$TLS_DIR/ca.pem"
            echo "SFA_SECURE_BROKER_PRINCIPAL=$SFA_SECURE_BROKER_PRINCIPAL"
            echo "SFA_SECURE_STORE_PASSWORD=$SFA_SECURE_STORE_PASSWORD"
            for user in "${SCRAM_USERS[@]}"; do
                local u="SFA_SECURE_${user^^}_USER" p="SFA_SECURE_${user^^}_PASSWORD"
                echo "$u=${!u}"
                echo "$p=${!p}"
            done
        } >"$SECURE_ENV.tmp"
    )
    mv -f "$SECURE_ENV.tmp" "$SECURE_ENV"
}

# A CA and a broker certificate signed by it (openssl), as the PKCS12 key store and
# trust store the broker reads (keytool); ca.pem is what clients trust.
make_tls() {
    [[ -f "$TLS_DIR/.complete" ]] && return 0
    command -v openssl >/dev/null || die "openssl not found (it makes the broker's certificates)"
    command -v keytool >/dev/null || die "keytool not found (Java 17+ ships it)"
    say "generating a CA and the broker certificate in $TLS_DIR"
    local tmp="$TLS_DIR.tmp" store="$SFA_SECURE_STORE_PASSWORD"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    if ! (
        cd "$tmp"
        umask 077
        openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj "/CN=sfa-dev-ca" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -keyout ca.key -out ca.pem
        openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=$BROKER_CN" \
            -keyout broker.key -out broker.csr
        # Clients check the host name: 127.0.0.1 and localhost. clientAuth: the broker
        # also presents it to its own controller listener (mutual TLS).
        printf '%s\n' "basicConstraints=CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth,clientAuth" \
            "subjectAltName=IP:127.0.0.1,DNS:localhost" >broker.ext
        openssl x509 -req -sha256 -days 3650 -in broker.csr -CA ca.pem -CAkey ca.key \
            -CAcreateserial -extfile broker.ext -out broker.pem
        openssl pkcs12 -export -name broker -in broker.pem -inkey broker.key -certfile ca.pem \
            -passout "pass:$store" -out broker.p12
        keytool -importcert -noprompt -alias sfa-dev-ca -file ca.pem -storetype PKCS12 \
            -keystore truststore.p12 -storepass "$store"
        chmod 644 ca.pem broker.pem
    ) >"$NODE/tls.log" 2>&1; then
        tail -n 20 "$NODE/tls.log" >&2
        die "could not generate the certificates (log: $NODE/tls.log)"
    fi
    touch "$tmp/.complete"
    rm -rf "$TLS_DIR"
    mv "$tmp" "$TLS_DIR"
}

prepare_secure() {
    mkdir -p "$NODE"
    secure_credentials
    write_secure_env
    make_tls
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
        [[ "$MODE" == secure ]] && prepare_secure
        write_config
        [[ -f "$LOG" ]] && mv -f "$LOG" "$LOG.1"
        format_storage
        if [[ "$MODE" == secure ]]; then
            say "starting secure broker: SASL_PLAINTEXT $BOOTSTRAP, SSL 127.0.0.1:$SSL_PORT" \
                "(controller 127.0.0.1:$CONTROLLER_PORT), log $LOG"
        else
            say "starting broker on $BOOTSTRAP (controller 127.0.0.1:$CONTROLLER_PORT), log $LOG"
        fi
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
            [[ "$MODE" == secure ]] && say "users, passwords and CA: $SECURE_ENV"
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
    local where="$BOOTSTRAP"
    [[ "$MODE" == secure ]] && where="$BOOTSTRAP (SASL) and 127.0.0.1:$SSL_PORT (SSL)"
    if answers; then
        local pid
        if pid="$(our_pid)"; then
            echo "$LABEL: answering on $where (pid $pid, data $NODE)"
        else
            echo "$LABEL: answering on $where (not started by this script)"
        fi
        return 0
    fi
    if pid="$(our_pid)"; then
        echo "$LABEL: process $pid running but not answering on $BOOTSTRAP yet (log $LOG)"
    else
        echo "$LABEL: not running on $where"
    fi
    return 1
}

# `export` lines that point `sfa run` (or any KAFKA_* reader) at the secure broker.
cmd_env() {
    load_secure_env || die "no $SECURE_ENV yet: run 'bash scripts/kafka.sh up-secure' first"
    local how="${1:-sasl}" user="${2:-sfa}"
    case "$how" in
        sasl)
            local var="SFA_SECURE_${user^^}_PASSWORD"
            [[ -n "${!var:-}" ]] || die "no SCRAM user '$user' (users: ${SCRAM_USERS[*]})"
            printf 'export KAFKA_BOOTSTRAP_SERVERS=%q\n' "$SFA_SECURE_SASL_BOOTSTRAP"
            printf 'export KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT\n'
            printf 'export KAFKA_SASL_MECHANISM=SCRAM-SHA-512\n'
            printf 'export KAFKA_SASL_USERNAME=%q\n' "$user"
            printf 'export KAFKA_SASL_PASSWORD=%q\n' "${!var}"
            ;;
        ssl)
            printf 'export KAFKA_BOOTSTRAP_SERVERS=%q\n' "$SFA_SECURE_SSL_BOOTSTRAP"
            printf 'export KAFKA_SECURITY_PROTOCOL=SSL\n'
            printf 'export KAFKA_SSL_CA_LOCATION=%q\n' "$SFA_SECURE_CA_LOCATION"
            ;;
        *) die "env-secure: say 'sasl [USER]' or 'ssl'" ;;
    esac
}

# Serialise up/down: CI and a pytest session may both call `up` at once.
locked() {
    mkdir -p "$HOME_DIR"
    exec 9>"$LOCK"
    flock -w 180 9 || die "another kafka.sh holds $LOCK"
    "$@"
}

main() {
    local cmd="${1:-}"
    case "$cmd" in
        up | down)
            use_plain
            locked "cmd_$cmd"
            ;;
        status)
            use_plain
            cmd_status
            ;;
        up-secure | down-secure)
            use_secure
            locked "cmd_${cmd%-secure}"
            ;;
        status-secure)
            use_secure
            cmd_status
            ;;
        env-secure)
            use_secure
            shift
            cmd_env "$@"
            ;;
        *)
            echo "usage: $0 up|down|status|up-secure|down-secure|status-secure|env-secure [sasl [USER]|ssl]" >&2
            exit 2
            ;;
    esac
}

main "$@"
