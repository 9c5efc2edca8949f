#!/bin/sh
# `make image`: the twin image from the Dockerfile, tagged ai-factory-twin:dev (JAX_VARIANT=cuda:
# ai-factory-twin:dev-cuda, built, not run, here).
# - builder: docker when its daemon answers, else buildah (chroot isolation: no daemon, no
#   user namespaces, runs as root in a container too);
# - base: python:3.11-slim when a registry is reachable (or already pulled), else a Debian
#   base made once with debootstrap (image/base.sh) and kept in the local store;
# - Python packages: the runtime dependencies' wheels downloaded on this host into
#   image/wheels (pinned to this environment's versions by image/pins.py; kept between
#   builds), installed offline in the build.
# Environment: PYTHON (the venv's interpreter), JAX_VARIANT (cpu|cuda), IMAGE (the tag),
# IMAGE_BASE (a base image to use as it is).
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
JAX_VARIANT=${JAX_VARIANT:-cpu}
case "$JAX_VARIANT" in
    cpu) IMAGE=${IMAGE:-ai-factory-twin:dev} ;;
    cuda) IMAGE=${IMAGE:-ai-factory-twin:dev-cuda} ;;
    *) echo "JAX_VARIANT must be cpu or cuda, not $JAX_VARIANT" >&2; exit 2 ;;
esac
OFFICIAL=docker.io/library/python:3.11-slim

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    ENGINE=docker; BUILD="docker build"
elif command -v buildah >/dev/null; then
    ENGINE=podman; BUILD="buildah build --isolation chroot --layers"
    command -v podman >/dev/null || ENGINE=buildah
else
    echo "make image: neither a docker daemon nor buildah (apt-get install buildah)" >&2; exit 1
fi

if [ -z "${IMAGE_BASE:-}" ]; then
    if $ENGINE image inspect "$OFFICIAL" >/dev/null 2>&1; then
        IMAGE_BASE=$OFFICIAL
    elif curl -fsS -m 5 -o /dev/null https://registry-1.docker.io/v2/ 2>/dev/null \
        || curl -sS -m 5 -o /dev/null -w '%{http_code}' https://registry-1.docker.io/v2/ 2>/dev/null | grep -q 401; then
        IMAGE_BASE=$OFFICIAL
    else
        echo "make image: no container registry reachable: a Debian base from debootstrap"
        [ "$ENGINE" = buildah ] && { echo "make image: importing a debootstrap base needs podman or docker" >&2; exit 1; }
        IMAGE_BASE=$(image/base.sh "$ENGINE")
    fi
fi
echo "make image: base $IMAGE_BASE, builder: $BUILD"

# The wheels, fetched again only when the pins change.
mkdir -p image/wheels
"$PYTHON" image/pins.py > image/wheels/constraints.new
if ! cmp -s image/wheels/constraints.new image/wheels/constraints.txt \
    || [ ! -f image/wheels/.complete ]; then
    rm -f image/wheels/.complete
    mv image/wheels/constraints.new image/wheels/constraints.txt
    "$PYTHON" -m pip wheel --quiet --no-deps -r image/wheels/constraints.txt -w image/wheels \
        2>&1 | grep -v "^WARNING: Location" || true
    touch image/wheels/.complete
else
    rm image/wheels/constraints.new
fi

start=$(date +%s)
$BUILD --build-arg PYTHON_IMAGE="$IMAGE_BASE" --build-arg JAX_VARIANT="$JAX_VARIANT" \
    -t "$IMAGE" -f Dockerfile .
size=$($ENGINE image inspect --format '{{.Size}}' "$IMAGE" 2>/dev/null || echo 0)
echo "make image: $IMAGE built in $(( $(date +%s) - start )) s, $(( size / 1000000 )) MB"
