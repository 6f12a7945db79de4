#!/usr/bin/env bash
# Build the operator image from the project's Dockerfile with no registry:
#
#   scripts/image.sh build        base image (cached), operator image, archives
#   scripts/image.sh docker-down  stop the Docker daemon if this script started it
#
# 1. A Debian bookworm root filesystem made by debootstrap (python3, python3-venv,
#    ca-certificates), cached as .cache/image/base-bookworm.tar and imported as
#    $LETHE_BASE_IMAGE. Rebuilt only when that tar is deleted.
# 2. `docker build` of the Dockerfile on that base with Debian's /usr/bin/docker
#    (20.10, BuildKit built in: no frontend image to fetch), host networking for
#    pip and the host CA bundle as a BuildKit secret (never stored in a layer).
# 3. Archives for `ctr -n k8s.io images import` (scripts/node-cluster.sh):
#    .cache/image/lethe.tar (the operator) and .cache/image/pause.tar (the pod
#    sandbox image: the same base running `sleep infinity`; containerd stops
#    sandboxes with SIGKILL, so it needs no signal handling).
#
# If no Docker daemon answers, this script starts dockerd itself (no iptables
# rules, no bridge: it only builds, with host networking) and leaves it running
# for the image test; `docker-down` (called by `scripts/node-cluster.sh down`)
# stops it. A daemon that was already running is used and never stopped.
#
# Environment:
#   LETHE_IMAGE       operator image reference          [lethe.local/lethe:dev]
#   LETHE_BASE_IMAGE  local base image                  [lethe.local/debian-python:bookworm]
#   LETHE_PAUSE_IMAGE pod sandbox image                 [lethe.local/pause:3.10]
#   LETHE_CA_BUNDLE   CA bundle handed to pip           [/etc/ssl/certs/ca-certificates.crt]
#   DOCKER            Docker client (20.10 has BuildKit without buildx) [/usr/bin/docker]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/.cache/image"
DOCKER_DIR="$ROOT/.cache/docker"
IMAGE="${LETHE_IMAGE:-lethe.local/lethe:dev}"
BASE="${LETHE_BASE_IMAGE:-lethe.local/debian-python:bookworm}"
PAUSE="${LETHE_PAUSE_IMAGE:-lethe.local/pause:3.10}"
CA="${LETHE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
DOCKER="${DOCKER:-/usr/bin/docker}"
SOCK=/var/run/docker.sock

log() { printf '[image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

docker_ok() { "$DOCKER" version >/dev/null 2>&1; }

docker_up() {
    [[ -x "$DOCKER" ]] || die "$DOCKER is missing: apt-get install docker.io"
    docker_ok && return
    command -v dockerd >/dev/null || die "dockerd is missing: apt-get install docker.io"
    mkdir -p "$DOCKER_DIR"
    log "starting dockerd (log $DOCKER_DIR/dockerd.log)"
    # --iptables=false --bridge=none: this daemon must not touch the host's
    # firewall or create docker0; builds use host networking.
    setsid dockerd --iptables=false --ip-masq=false --bridge=none \
        --pidfile "$DOCKER_DIR/dockerd.pid" --host "unix://$SOCK" \
        </dev/null >"$DOCKER_DIR/dockerd.log" 2>&1 &
    echo "$!" >"$DOCKER_DIR/started-by-lethe"
    for _ in $(seq 300); do
        docker_ok && return
        sleep 0.2
    done
    tail -n 20 "$DOCKER_DIR/dockerd.log" >&2
    die "dockerd did not answer within 60s"
}

docker_down() {
    local f="$DOCKER_DIR/started-by-lethe" pid
    [[ -f "$f" ]] || return 0
    pid="$(cat "$f")"
    if [[ -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q dockerd; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 150); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$pid" 2>/dev/null || true
        log "stopped dockerd (pid $pid)"
    fi
    rm -f "$f"
}

base_tar() {
    local tar="$DIR/base-bookworm.tar"
    [[ -s "$tar" ]] && return
    command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
    local rootfs="$DIR/rootfs.tmp" start=$SECONDS
    rm -rf "$rootfs"
    mkdir -p "$DIR"
    log "debootstrap bookworm into $rootfs (about 2-4 minutes)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" >"$DIR/debootstrap.log" 2>&1 \
        || { tail -n 20 "$DIR/debootstrap.log" >&2; die "debootstrap failed"; }
    # apt's lists and caches are not needed at run time.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" --numeric-owner -cf "$tar.tmp" .
    mv -f "$tar.tmp" "$tar"
    rm -rf "$rootfs"
    log "base root filesystem in $((SECONDS - start))s: $tar"
}

build() {
    mkdir -p "$DIR"
    base_tar
    docker_up
    if ! "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
        "$DOCKER" import "$DIR/base-bookworm.tar" "$BASE" >/dev/null
        log "imported $BASE"
    fi
    if ! "$DOCKER" image inspect "$PAUSE" >/dev/null 2>&1; then
        "$DOCKER" import --change 'ENTRYPOINT ["/bin/sleep", "infinity"]' \
            "$DIR/base-bookworm.tar" "$PAUSE" >/dev/null
        log "imported $PAUSE"
    fi
    local secret=()
    [[ -r "$CA" ]] && secret=(--secret "id=cacert,src=$CA")
    local start=$SECONDS
    log "building $IMAGE"
    DOCKER_BUILDKIT=1 "$DOCKER" build --network host --build-arg "PYTHON_IMAGE=$BASE" \
        "${secret[@]}" --progress plain -t "$IMAGE" "$ROOT" >"$DIR/build.log" 2>&1 \
        || { tail -n 30 "$DIR/build.log" >&2; die "docker build failed (log $DIR/build.log)"; }
    log "built $IMAGE in $((SECONDS - start))s"
    # Archives for containerd, rewritten only when the image changed.
    local id
    id="$("$DOCKER" image inspect -f '{{.Id}}' "$IMAGE")"
    if [[ "$(cat "$DIR/lethe.id" 2>/dev/null)" != "$id" || ! -s "$DIR/lethe.tar" ]]; then
        "$DOCKER" save -o "$DIR/lethe.tar.tmp" "$IMAGE"
        mv -f "$DIR/lethe.tar.tmp" "$DIR/lethe.tar"
        printf '%s' "$id" >"$DIR/lethe.id"
    fi
    id="$("$DOCKER" image inspect -f '{{.Id}}' "$PAUSE")"
    if [[ "$(cat "$DIR/pause.id" 2>/dev/null)" != "$id" || ! -s "$DIR/pause.tar" ]]; then
        "$DOCKER" save -o "$DIR/pause.tar.tmp" "$PAUSE"
        mv -f "$DIR/pause.tar.tmp" "$DIR/pause.tar"
        printf '%s' "$id" >"$DIR/pause.id"
    fi
    # The references, for scripts/node-cluster.sh and the tests.
    printf '%s' "$IMAGE" >"$DIR/lethe.ref"
    printf '%s' "$PAUSE" >"$DIR/pause.ref"
    log "archives: $DIR/lethe.tar $DIR/pause.tar"
}

case "${1:-}" in
    build) build ;;
    docker-down) docker_down ;;
    *) echo "usage: $0 build|docker-down" >&2; exit 2 ;;
esac
