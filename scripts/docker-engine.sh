#!/usr/bin/env bash
# Start, stop or query a local Docker engine for pfcon's tests and CI.
#
# Usage: scripts/docker-engine.sh [start|stop|status]      (default: start)
#
#   start   Exit 0 at once if `docker info` already works (DOCKER_HOST is
#           respected). Otherwise install Debian's docker.io (engine 20.10)
#           and busybox-static without letting their maintainer scripts start
#           any daemon, then start
#             dockerd --bridge=none --iptables=false --ip6tables=false \
#                     -H unix:///var/run/docker.sock
#           detached, and wait (at most 60 s) until `docker info` works.
#           Containers get loopback only: run them with `--network none`.
#   stop    Stop the dockerd this script started (PID file), and only that one.
#   status  Say whether an engine is reachable, and its version.
#
# Files: log /var/log/pfcon-ci/dockerd.log, PID file /run/pfcon-ci/dockerd.pid.
# Idempotent: run `start` as often as you like.
set -euo pipefail

ME=docker-engine.sh
LOG_FILE=/var/log/pfcon-ci/dockerd.log
PID_FILE=/run/pfcon-ci/dockerd.pid
SOCK=/var/run/docker.sock
DOCKERD_PIDFILE=/var/run/docker.pid                        # dockerd's own
CONTAINERD_PIDFILE=/var/run/docker/containerd/containerd.pid
LOCK_FILE=/run/pfcon-ci/docker-engine.lock  # serialises concurrent start/stop
START_TIMEOUT=60
STOP_TIMEOUT=30

log() { echo "[$ME] $*"; }
die() { echo "[$ME] ERROR: $*" >&2; exit 1; }

engine_reachable() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }

# True if $1 is the PID of a live process whose command name is $2.
pid_is() {
    [[ "$1" =~ ^[0-9]+$ ]] && [[ "$(cat "/proc/$1/comm" 2>/dev/null)" == "$2" ]]
}

take_lock() {
    mkdir -p "$(dirname "$LOCK_FILE")"
    exec 9>"$LOCK_FILE"
    flock -w 300 9 || die "could not lock $LOCK_FILE within 300s"
}

# True if any process named dockerd is alive (no procps needed).
any_dockerd_running() {
    local f
    for f in /proc/[0-9]*/comm; do
        [[ "$(cat "$f" 2>/dev/null)" == dockerd ]] && return 0
    done
    return 1
}

# ---------------------------------------------------------------- packages --

is_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

# apt-get update is only needed when apt knows no candidate for a package.
needs_apt_update() {
    local p
    for p in "$@"; do
        apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [^(]' || return 0
    done
    return 1
}

POLICY_RC_D=/usr/sbin/policy-rc.d
CREATED_POLICY_RC_D=0
remove_our_policy_rc_d() {
    if ((CREATED_POLICY_RC_D)); then
        rm -f "$POLICY_RC_D"
        CREATED_POLICY_RC_D=0
    fi
}
trap remove_our_policy_rc_d EXIT

install_packages() {
    local pkgs=(docker.io busybox-static) missing=() p
    # Only needed on hosts whose kernel enforces AppArmor.
    [[ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" == Y ]] && pkgs+=(apparmor)
    # Only needed on hosts where nothing mounted the cgroup filesystems.
    grep -q cgroup /proc/mounts || pkgs+=(cgroupfs-mount)
    for p in "${pkgs[@]}"; do is_installed "$p" || missing+=("$p"); done
    if ((${#missing[@]} == 0)); then
        log "packages already installed: ${pkgs[*]}"
    else
        log "installing ${missing[*]}"
        # Keep maintainer scripts from starting daemons (invoke-rc.d honours
        # policy-rc.d; exit code 101 means "action forbidden").
        if [[ ! -e "$POLICY_RC_D" ]]; then
            printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC_D"
            chmod 755 "$POLICY_RC_D"
            CREATED_POLICY_RC_D=1
        fi
        # NEEDRESTART_SUSPEND: needrestart's apt hook must not restart services.
        export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
        local apt_opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=300)
        if needs_apt_update "${missing[@]}"; then
            log "apt-get update"
            apt-get update -q -o DPkg::Lock::Timeout=300
        fi
        if ! apt-get install "${apt_opts[@]}" "${missing[@]}"; then
            log "install failed; retrying after apt-get update (package lists may be stale)"
            apt-get update -q -o DPkg::Lock::Timeout=300
            apt-get install "${apt_opts[@]}" "${missing[@]}"
        fi
        remove_our_policy_rc_d
    fi
    if ! grep -q cgroup /proc/mounts; then
        log "mounting cgroup filesystems"
        cgroupfs-mount
    fi
}

# ------------------------------------------------------------------- start --

# dockerd refuses to start while its PID file names a live process, and trusts
# a containerd PID file whose PID has been reused by some other process. Clear
# such leftovers of a daemon that is gone; never touch a live daemon.
clear_stale_state() {
    local pid
    if [[ -f "$DOCKERD_PIDFILE" ]]; then
        pid=$(cat "$DOCKERD_PIDFILE" 2>/dev/null || true)
        if ! pid_is "$pid" dockerd; then
            log "removing stale $DOCKERD_PIDFILE (pid '$pid' is not a running dockerd)"
            rm -f "$DOCKERD_PIDFILE"
        fi
    fi
    if [[ -f "$CONTAINERD_PIDFILE" ]]; then
        pid=$(cat "$CONTAINERD_PIDFILE" 2>/dev/null || true)
        if ! pid_is "$pid" containerd; then
            log "removing stale $CONTAINERD_PIDFILE"
            rm -f "$CONTAINERD_PIDFILE"
        fi
    fi
    if [[ -f "$PID_FILE" ]] && ! pid_is "$(cat "$PID_FILE" 2>/dev/null)" dockerd; then
        rm -f "$PID_FILE"
    fi
    if [[ -S "$SOCK" ]] && ! any_dockerd_running; then
        log "removing stale socket $SOCK (no dockerd running)"
        rm -f "$SOCK"
    fi
}

# Wait until the engine answers; $1 is the PID to watch (may die meanwhile).
wait_for_engine() {
    local pid=$1 deadline=$((SECONDS + START_TIMEOUT))
    until DOCKER_HOST="unix://$SOCK" docker info >/dev/null 2>&1; do
        if ! pid_is "$pid" dockerd; then
            echo "[$ME] ERROR: dockerd (pid $pid) exited before it was ready; end of $LOG_FILE:" >&2
            tail -n 30 "$LOG_FILE" >&2 || true
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            echo "[$ME] ERROR: dockerd (pid $pid) not ready after ${START_TIMEOUT}s; end of $LOG_FILE:" >&2
            tail -n 30 "$LOG_FILE" >&2 || true
            exit 1
        fi
        sleep 0.5
    done
}

cmd_start() {
    if engine_reachable; then
        log "engine already reachable (${DOCKER_HOST:-default host}), server $(server_version)"
        return 0
    fi
    if [[ -n "${DOCKER_HOST:-}" && "$DOCKER_HOST" != "unix://$SOCK" ]]; then
        die "DOCKER_HOST=$DOCKER_HOST is set but unreachable; unset it to start a local engine on unix://$SOCK"
    fi
    ((EUID == 0)) || die "starting the engine needs root"
    take_lock
    if engine_reachable; then  # started by a concurrent run meanwhile
        log "engine became reachable, server $(server_version)"
        return 0
    fi

    install_packages
    clear_stale_state
    mkdir -p "$(dirname "$LOG_FILE")" "$(dirname "$PID_FILE")"

    local pid
    if [[ -f "$DOCKERD_PIDFILE" ]]; then
        # Some dockerd is alive but not answering yet (starting up, or not ours).
        pid=$(cat "$DOCKERD_PIDFILE")
        log "a dockerd is already running (pid $pid) but does not answer yet; waiting for it"
    else
        log "starting dockerd (log: $LOG_FILE)"
        echo "---- $(date -u +%FT%TZ) $ME start" >>"$LOG_FILE"
        # A background job of a non-interactive shell is no process-group
        # leader, so setsid does not fork: $! is dockerd's own PID.
        # 9>&-: dockerd must not inherit (and so hold forever) our lock.
        setsid nohup dockerd --bridge=none --iptables=false --ip6tables=false \
            -H "unix://$SOCK" >>"$LOG_FILE" 2>&1 </dev/null 9>&- &
        pid=$!
        echo "$pid" >"$PID_FILE"
    fi

    local t0=$SECONDS
    wait_for_engine "$pid"
    engine_reachable || die "dockerd answers on unix://$SOCK but \`docker info\` does not work (docker context?)"
    log "engine ready after $((SECONDS - t0))s: server $(server_version), client $(client_version), dockerd pid $pid"
}

# -------------------------------------------------------------- stop/status --

cmd_stop() {
    local pid
    pid=$(cat "$PID_FILE" 2>/dev/null || true)
    if [[ -z "$pid" ]]; then
        log "no PID file $PID_FILE: no engine started by this script; nothing to stop"
        return 0
    fi
    if ! pid_is "$pid" dockerd; then
        log "dockerd (pid $pid) from $PID_FILE is not running; removing the PID file"
        rm -f "$PID_FILE"
        return 0
    fi
    take_lock
    log "stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while pid_is "$pid" dockerd; do
        if ((SECONDS >= deadline)); then
            log "dockerd did not exit after ${STOP_TIMEOUT}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 1
            break
        fi
        sleep 0.5
    done
    rm -f "$PID_FILE"
    log "dockerd stopped"
}

server_version() { docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null || echo unknown; }
client_version() { docker version --format '{{.Client.Version}}' 2>/dev/null || echo unknown; }

cmd_status() {
    if engine_reachable; then
        local owner="not started by this script"
        pid_is "$(cat "$PID_FILE" 2>/dev/null)" dockerd && owner="started by this script, pid $(cat "$PID_FILE")"
        log "engine reachable at ${DOCKER_HOST:-unix://$SOCK}: server $(server_version), client $(client_version) [$(command -v docker)]; $owner"
    else
        log "engine NOT reachable at ${DOCKER_HOST:-unix://$SOCK}"
        return 1
    fi
}

case "${1:-start}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    -h | --help) sed -n '2,18s/^# \{0,1\}//p' "$0" ;;
    *) die "unknown subcommand '$1' (use start, stop or status)" ;;
esac
