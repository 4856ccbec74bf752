#!/usr/bin/env bash
# The service image without a Docker engine or an image registry: podman builds the
# Dockerfile on a base made here by debootstrap (Debian bookworm minbase with python3),
# because no registry (and so no python:3.11-slim) is reachable from the CI machine.
#
#   bash scripts/image.sh build    (default) tools, base (cached), then the Dockerfile -> $SFA_IMAGE
#   bash scripts/image.sh base     only the base image
#   bash scripts/image.sh registry the schema registry of compose's `avro` profile
#                                  (deploy/registry/Dockerfile) on the same base -> $SFA_REGISTRY_IMAGE
#   bash scripts/image.sh tools    install podman, buildah, runc, debootstrap when missing (apt, root)
#   bash scripts/image.sh env      print `export CONTAINERS_CONF=...` for running podman by hand
#
# Environment:
#   SFA_IMAGE          tag of the service image (default localhost/sfa:latest)
#   SFA_BASE_IMAGE     tag of the base image (default localhost/sfa-base:bookworm)
#   SFA_REGISTRY_IMAGE tag of the registry image (default localhost/sfa-registry:3.0.9)
#   SFA_IMAGE_CACHE    where the base's root file system is cached as a tarball
#                      (default <repo>/.cache/image; `make clean` keeps it)
#   SFA_DEBIAN_MIRROR  Debian mirror for debootstrap (default http://deb.debian.org/debian)
#   CONTAINERS_CONF    podman settings (default deploy/standins/containers.conf: runc, ulimits)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${SFA_IMAGE:-localhost/sfa:latest}"
BASE_IMAGE="${SFA_BASE_IMAGE:-localhost/sfa-base:bookworm}"
REGISTRY_IMAGE="${SFA_REGISTRY_IMAGE:-localhost/sfa-registry:3.0.9}"
CACHE="${SFA_IMAGE_CACHE:-$REPO/.cache/image}"
MIRROR="${SFA_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
PACKAGES=python3,python3-venv,python3-pip,ca-certificates
HOST_CA=/etc/ssl/certs/ca-certificates.crt
HOST_JAVA_CA=/etc/ssl/certs/java/cacerts
export CONTAINERS_CONF="${CONTAINERS_CONF:-$REPO/deploy/standins/containers.conf}"

say() { printf 'image.sh: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

# The base is rebuilt whenever what goes into it changes: suite, packages, this recipe.
base_key() {
    printf '%s\n' "$SUITE" "$PACKAGES" "$(declare -f make_rootfs)" | sha256sum | cut -c1-16
}

cmd_tools() {
    local missing=() tool
    for tool in podman buildah runc debootstrap; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    ((${#missing[@]} == 0)) && return 0
    [[ $(id -u) == 0 ]] || die "missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
    say "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq -o DPkg::Lock::Timeout=600
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
}

# A root file system that behaves like python:3.11-slim where the Dockerfile relies on it:
# python and pip on PATH under /usr/local, `pip install --prefix=/install` laid out as
# /install/{bin,lib/python3.11/site-packages}. Debian's own pip puts prefix installs under
# /usr/local/local; making /usr/local a venv gives the plain upstream layout.
make_rootfs() {
    local root="$1"
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR"
    chroot "$root" python3 -m venv /usr/local
    chroot "$root" /usr/local/bin/python -c 'import sys; assert sys.prefix == "/usr/local"'
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/tmp/*
}

base_exists() {
    # The image carries its key as a label, so a recipe change is not hidden by an old tag.
    local have
    have="$(podman image inspect --format '{{index .Config.Labels "sfa.base.key"}}' "$BASE_IMAGE" 2>/dev/null)" || return 1
    [[ "$have" == "$1" ]]
}

cmd_base() {
    cmd_tools
    local key tarball root
    key="$(base_key)"
    if base_exists "$key"; then
        say "base $BASE_IMAGE is current (key $key)"
        return 0
    fi
    tarball="$CACHE/base-$SUITE-$key.tar"
    if [[ ! -f "$tarball" ]]; then
        [[ $(id -u) == 0 ]] || die "debootstrap needs root to build the base once"
        mkdir -p "$CACHE"
        root="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
        # A failed debootstrap leaves mounts and a half tree; never cache that.
        trap 'umount -R "$root"/proc "$root"/sys 2>/dev/null || true; rm -rf "$root" "$tarball.tmp"' EXIT
        say "debootstrap $SUITE minbase + $PACKAGES into $root (once; log $CACHE/debootstrap.log)"
        if ! make_rootfs "$root" >"$CACHE/debootstrap.log" 2>&1; then
            tail -n 20 "$CACHE/debootstrap.log" >&2
            die "debootstrap failed (log: $CACHE/debootstrap.log)"
        fi
        tar --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
            -C "$root" -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$root"
        trap - EXIT
        # Older tarballs belong to recipes nobody builds any more.
        find "$CACHE" -maxdepth 1 -name "base-$SUITE-*.tar" ! -name "base-$SUITE-$key.tar" -delete
    fi
    say "importing $tarball as $BASE_IMAGE"
    podman import \
        --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change "LABEL sfa.base.key=$key" \
        --change 'CMD ["python3"]' \
        "$tarball" "$BASE_IMAGE" >/dev/null
}

cmd_build() {
    cmd_base
    local started mounts=()
    started=$(date +%s)
    # pip in the build trusts what the host trusts (a proxy's CA, say) through a read-only
    # mount over the base's bundle: it is visible to RUN steps and never stored in a layer.
    [[ -f "$HOST_CA" ]] && mounts+=(--volume "$HOST_CA:$HOST_CA:ro")
    say "building $IMAGE from $BASE_IMAGE"
    # --format docker: the OCI format has no HEALTHCHECK and podman would drop it.
    podman build --format docker --build-arg "BASE=$BASE_IMAGE" "${mounts[@]}" \
        --label "org.opencontainers.image.source=sfa" -t "$IMAGE" "$REPO"
    # Every code change leaves the previous image and build stage untagged; drop the ones
    # older than a day, so a CI machine kept across sessions does not fill its disk.
    podman image prune --force --filter until=24h >/dev/null 2>&1 || true
    say "built $IMAGE in $(($(date +%s) - started)) s"
}

# The registry image: Apicurio fetched by Maven inside the build, on the same base, so
# compose's `avro` profile needs no image registry either.
cmd_registry() {
    cmd_base
    local started mounts=()
    started=$(date +%s)
    [[ -f "$HOST_CA" ]] && mounts+=(--volume "$HOST_CA:$HOST_CA:ro")
    # Maven's Java reads a keystore, not the PEM bundle: the host's, read-only, where
    # the build's apt cannot overwrite it (ca-certificates-java writes its own).
    if [[ -f "$HOST_JAVA_CA" ]]; then
        mounts+=(--volume "$HOST_JAVA_CA:/run/host-java-cacerts:ro")
        mounts+=(--build-arg "JAVA_TRUSTSTORE=/run/host-java-cacerts")
    fi
    say "building $REGISTRY_IMAGE from $BASE_IMAGE"
    podman build --format docker --build-arg "BASE=$BASE_IMAGE" "${mounts[@]}" \
        -f "$REPO/deploy/registry/Dockerfile" -t "$REGISTRY_IMAGE" "$REPO"
    say "built $REGISTRY_IMAGE in $(($(date +%s) - started)) s"
}

main() {
    case "${1:-build}" in
        build | base | tools | registry) "cmd_${1:-build}" ;;
        env) printf 'export CONTAINERS_CONF=%q\n' "$CONTAINERS_CONF" ;;
        *)
            echo "usage: $0 [build|base|tools|registry|env]" >&2
            exit 2
            ;;
    esac
}

main "$@"
