#!/usr/bin/env bash
# deploy/compose/ under podman-compose with the local stand-ins (no Docker engine, no
# registry): what `make compose-test` runs, and how to bring the stack up by hand here.
#
#   bash scripts/compose.sh up      build the image and stand-ins, start every service but Grafana
#   bash scripts/compose.sh down    stop and remove the project's containers and network
#   bash scripts/compose.sh ps      list them
#
# podman 4.3 (Debian bookworm) cannot start a container that `--requires` an exited one
# whose own dependencies are not in the same start request, which is what podman-compose
# makes of depends_on with a one-shot job; and it ignores service_healthy. So `up` starts
# the stack in the order depends_on states, in three stages with --no-deps:
# the long-running services, the topics job (waited for), then the load job (waited for)
# and the instances.
#
# Environment: SFA_COMPOSE_PROJECT (default sfa), the compose file's port and market
# variables (SFA_KAFKA_PORT, SFA_1_PORT, SFA_2_PORT, SFA_PROMETHEUS_PORT, ...).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROJECT="${SFA_COMPOSE_PROJECT:-sfa}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$REPO/deploy/standins/containers.conf}"
export SFA_IMAGE="${SFA_IMAGE:-localhost/sfa:latest}"
COMPOSE_BIN="${PODMAN_COMPOSE:-$REPO/.venv/bin/podman-compose}"
[[ -x "$COMPOSE_BIN" ]] || COMPOSE_BIN="$(command -v podman-compose)" \
    || { echo "compose.sh: podman-compose missing (make install)" >&2; exit 1; }
COMPOSE=("$COMPOSE_BIN" -p "$PROJECT" -f "$REPO/deploy/compose/compose.yaml"
    -f "$REPO/deploy/compose/compose.standins.yaml")

LOG_DIR="${SFA_COMPOSE_LOGS:-$REPO/.cache/compose}"
LOG="$LOG_DIR/$PROJECT.log"

say() { printf 'compose.sh: %s\n' "$*" >&2; }

# Into a log file, never our stdout/stderr: the conmon processes podman leaves behind
# inherit those descriptors, and a caller reading our output through a pipe would wait
# for them forever. (The log also holds podman's systemd complaints about health-check
# timers: no systemd here to run them, which is noise, not an error.)
quiet() {
    "$@" </dev/null >>"$LOG" 2>&1 || {
        tail -n 30 "$LOG" >&2
        say "error: $* failed (log: $LOG)"
        exit 1
    }
}

# A one-shot job's exit code: 0, or its last lines and an error.
wait_job() {
    local rc
    rc="$(podman wait "${PROJECT}_$1_1" 2>>"$LOG")"
    if [[ "$rc" != 0 ]]; then
        podman logs --tail 20 "${PROJECT}_$1_1" >&2 || true
        say "error: the $1 job exited with $rc"
        exit 1
    fi
}

cmd_up() {
    mkdir -p "$LOG_DIR"
    : >"$LOG"
    quiet bash "$REPO/scripts/image.sh" build
    quiet bash "$REPO/scripts/standins.sh"
    say "starting kafka, dask, prometheus (project $PROJECT)"
    quiet "${COMPOSE[@]}" up -d --no-deps kafka dask-scheduler dask-worker-1 dask-worker-2 prometheus
    say "creating topics"
    quiet "${COMPOSE[@]}" up -d --no-deps topics
    wait_job topics
    say "loading the market, starting sfa-1 and sfa-2"
    quiet "${COMPOSE[@]}" up -d --no-deps load sfa-1 sfa-2
    wait_job load
    say "up; \`bash scripts/compose.sh down\` removes it"
}

cmd_down() {
    mkdir -p "$LOG_DIR"
    quiet "${COMPOSE[@]}" down -t 30
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    ps) podman ps -a --filter "label=io.podman.compose.project=$PROJECT" ;;
    *)
        echo "usage: $0 up|down|ps" >&2
        exit 2
        ;;
esac
