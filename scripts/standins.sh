#!/usr/bin/env bash
# Local stand-ins for the registry images deploy/compose/compose.yaml names (apache/kafka,
# prom/prometheus), for machines that reach no image registry: built with podman on the
# service image's debootstrap base from Debian packages and Maven Central's Kafka jars.
# deploy/compose/compose.standins.yaml points compose at them. Grafana has no stand-in.
#
#   bash scripts/standins.sh       build both (each is skipped when its inputs are unchanged)
#
# Environment: SFA_STANDIN_CACHE (default <repo>/.cache/standins), and those of image.sh.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${SFA_STANDIN_CACHE:-$REPO/.cache/standins}"
BASE_IMAGE="${SFA_BASE_IMAGE:-localhost/sfa-base:bookworm}"
KAFKA_IMAGE=localhost/sfa-standin-kafka:4.1.1
PROMETHEUS_IMAGE=localhost/sfa-standin-prometheus:latest
export CONTAINERS_CONF="${CONTAINERS_CONF:-$REPO/deploy/standins/containers.conf}"

say() { printf 'standins.sh: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

# Content hash of a build's inputs, stored as a label: unchanged inputs, no rebuild.
current() {
    local have
    have="$(podman image inspect --format '{{index .Config.Labels "sfa.standin.key"}}' "$1" 2>/dev/null)" || return 1
    [[ "$have" == "$2" ]]
}

build() {
    local image="$1" context="$2" key="$3"
    if current "$image" "$key"; then
        say "$image is current"
        return 0
    fi
    say "building $image"
    podman build --format docker --build-arg "BASE=$BASE_IMAGE" --label "sfa.standin.key=$key" \
        -t "$image" "$context" >"$CACHE/$(basename "$context").build.log" 2>&1 \
        || { tail -n 30 "$CACHE/$(basename "$context").build.log" >&2; die "building $image failed"; }
}

kafka_libs() {
    local pom="$REPO/deploy/standins/kafka/pom.xml" libs="$CACHE/kafka-libs" want have=""
    want="$(sha256sum "$pom" | cut -d' ' -f1)"
    [[ -f "$libs/.complete" ]] && have="$(cat "$libs/.complete")"
    [[ "$have" == "$want" ]] && return 0
    command -v mvn >/dev/null || die "mvn not found; it fetches the Kafka jars once"
    say "fetching the Kafka broker and tools jars with Maven (once)"
    rm -rf "$libs.tmp"
    mvn -B -q -f "$pom" dependency:copy-dependencies -DoutputDirectory="$libs.tmp" \
        >"$CACHE/maven.log" 2>&1 || { tail -n 20 "$CACHE/maven.log" >&2; die "maven failed"; }
    rm -rf "$libs"
    mv "$libs.tmp" "$libs"
    echo "$want" >"$libs/.complete"
}

main() {
    mkdir -p "$CACHE"
    bash "$REPO/scripts/image.sh" base
    kafka_libs

    local ctx="$CACHE/kafka" key
    rm -rf "$ctx"
    mkdir -p "$ctx"
    cp -a "$REPO/deploy/standins/kafka/." "$ctx/"
    cp "$REPO/deploy/kafka/log4j2.xml" "$ctx/log4j2.xml"
    cp -a "$CACHE/kafka-libs" "$ctx/libs"
    rm -f "$ctx/libs/.complete" "$ctx/pom.xml"
    key="$( (cd "$ctx" && find . -type f -print0 | sort -z | xargs -0 sha256sum; echo "$BASE_IMAGE") | sha256sum | cut -c1-16)"
    build "$KAFKA_IMAGE" "$ctx" "$key"

    ctx="$REPO/deploy/standins/prometheus"
    key="$( (sha256sum "$ctx/Dockerfile"; echo "$BASE_IMAGE") | sha256sum | cut -c1-16)"
    build "$PROMETHEUS_IMAGE" "$ctx" "$key"
}

main "$@"
