#!/usr/bin/env bash
# `make image`: build the production image without any registry.
#   BASE_IMAGE  base with Python >= 3.11 (default: a local Debian bookworm image made
#               from the debootstrap root filesystem that scripts/test-images.sh caches)
#   IMAGE       tag to build (default local/pfcon:<version>)
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "build-image.sh: $*"; }

bash scripts/install.sh
bash scripts/docker-engine.sh start
version=$(.venv/bin/python -c 'import pfcon; print(pfcon.__version__)')
IMAGE=${IMAGE:-local/pfcon:$version}

if [ -z "${BASE_IMAGE:-}" ]; then
    BASE_IMAGE=local/debian-python:bookworm
    if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        rootfs=$(ls /var/cache/pfcon-ci/rootfs-bookworm-minbase-*python3*.tar 2>/dev/null | head -1 || true)
        if [ -z "$rootfs" ]; then
            bash scripts/test-images.sh >/dev/null
            rootfs=$(ls /var/cache/pfcon-ci/rootfs-bookworm-minbase-*python3*.tar | head -1)
        fi
        say "importing $rootfs as $BASE_IMAGE"
        docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' "$rootfs" "$BASE_IMAGE" >/dev/null
    fi
fi

say "building a wheelhouse for an offline build"
rm -rf .image-wheels
.venv/bin/python -m pip wheel -q --wheel-dir .image-wheels '.[swift]' > .venv/log/wheel.log 2>&1 \
    || { tail -30 .venv/log/wheel.log >&2; exit 1; }
trap 'rm -rf .image-wheels' EXIT

say "docker build -t $IMAGE (base $BASE_IMAGE)"
DOCKER_BUILDKIT=0 docker build -q --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" . >/dev/null
say "built $IMAGE"
echo "$IMAGE"
