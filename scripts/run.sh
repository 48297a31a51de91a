#!/usr/bin/env bash
# `make run`: start the server on 127.0.0.1:30005 (PORT overrides) with Docker and a
# local storeBase. Every pfcon environment variable is honoured; only unset ones get
# the defaults below, so any mode runs with the same command, e.g.
#   STORAGE_ENV=fslink PFCON_INNETWORK=true make run
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "run.sh: $*" >&2; }

bash scripts/install.sh
if [ "${CONTAINER_ENV:-docker}" = docker ] && [ -z "${DOCKER_HOST:-}" ]; then
    bash scripts/docker-engine.sh start
    # The small image of the README's examples (seconds; a no-op once built).
    bash scripts/test-images.sh --busybox-only >/dev/null || say "could not build local/pfcon-busybox:1 (make images)"
    # pfcon 6's op jobs run this project's image (built once; `make image` rebuilds it), on
    # the host network: the local engine has no bridge, and they may have to reach Swift/S3.
    if [ -z "${PFCON_OP_IMAGE:-}" ] && ! docker image inspect "local/pfcon:$(.venv/bin/python -c 'import pfcon; print(pfcon.__version__)')" >/dev/null 2>&1; then
        say "building the op-job image (make image; once)"
        bash scripts/build-image.sh >/dev/null || say "could not build the op-job image (make image): pfcon 6's op jobs will fail"
    fi
    export PFCON_OP_NETWORK=${PFCON_OP_NETWORK:-host}
elif [ "${CONTAINER_ENV:-}" = podman ] && [ -z "${DOCKER_HOST:-}" ]; then
    bash scripts/docker-engine.sh start
elif [ "${CONTAINER_ENV:-}" = swarm ] && [ -z "${DOCKER_HOST:-}" ]; then
    bash scripts/swarm.sh start  # the local engine (started if needed) as a one-node swarm
    bash scripts/test-images.sh --busybox-only >/dev/null || say "could not build local/pfcon-busybox:1 (make images)"
elif [ "${CONTAINER_ENV:-}" = slurm ] && [ -z "${SLURM_CONF:-}" ] && ! [ -e /etc/slurm/slurm.conf ]; then
    # No cluster configured on this host: the local two-node one (Docker as its runtime).
    say "starting a local SLURM cluster for CONTAINER_ENV=slurm"
    bash scripts/slurm-cluster.sh start >&2
    eval "$(bash scripts/slurm-cluster.sh env)"
    bash scripts/test-images.sh --busybox-only >/dev/null || say "could not build local/pfcon-busybox:1 (make images)"
    export PFCON_OP_NETWORK=${PFCON_OP_NETWORK:-host}
fi

export APPLICATION_MODE=${APPLICATION_MODE:-dev}
export HOST=${HOST:-127.0.0.1}
export PORT=${PORT:-30005}
if [ -z "${COMPUTE_VOLUME_TYPE:-}" ] && [ -z "${VOLUME_NAME:-}" ]; then
    export COMPUTE_VOLUME_TYPE=host
    export STOREBASE=${STOREBASE:-$PWD/.run/storeBase}
    export STOREBASE_MOUNT=${STOREBASE_MOUNT:-$STOREBASE}
    mkdir -p "$STOREBASE"
fi

innetwork=$(echo "${PFCON_INNETWORK:-false}" | tr '[:upper:]' '[:lower:]')
case "$innetwork" in
    1|true|yes|on|y|t)
        if [ "${STORAGE_ENV:-swift}" = swift ] && [ -z "${SWIFT_AUTH_URL:-}" ]; then
            say "starting a local Swift for STORAGE_ENV=swift"
            bash scripts/swift-aio.sh start >&2
            eval "$(bash scripts/swift-aio.sh env)"
        fi
        if [ "${STORAGE_ENV:-}" = s3 ] && [ -z "${S3_ENDPOINT_URL:-}" ]; then
            say "starting a local S3 (SeaweedFS) for STORAGE_ENV=s3"
            bash scripts/s3-server.sh start >&2
            eval "$(bash scripts/s3-server.sh env)"
        fi
        ;;
esac

say "pfcon on http://$HOST:$PORT/api/v1/ (storeBase ${STOREBASE_MOUNT:-/var/local/storeBase})"
exec .venv/bin/pfcon serve
