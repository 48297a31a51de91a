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

# shellcheck source=lib/common.sh source-path=SCRIPTDIR
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib/common.sh"

engine_reachable() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }

# True if the engine answers on our socket (whatever DOCKER_HOST says).
engine_answers() { DOCKER_HOST="unix://$SOCK" docker info >/dev/null 2>&1; }

# True if any process named dockerd is alive (no procps needed).
any_dockerd_running() {
    local f
    for f in /proc/[0-9]*/comm; do
        [[ "$(cat "$f" 2>/dev/null)" == dockerd ]] && return 0
    done
    return 1
}

# ---------------------------------------------------------------- packages --

install_packages() {
    local pkgs=(docker.io busybox-static)
    # Only needed on hosts whose kernel enforces AppArmor.
    [[ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" == Y ]] && pkgs+=(apparmor)
    # Only needed on hosts where nothing mounted the cgroup filesystems.
    grep -q cgroup /proc/mounts || pkgs+=(cgroupfs-mount)
    ensure_packages "${pkgs[@]}"
    ((${#MISSING_PKGS[@]})) || log "packages already installed: ${pkgs[*]}"
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
    remove_stale_pid_file "$DOCKERD_PIDFILE" dockerd
    remove_stale_pid_file "$CONTAINERD_PIDFILE" containerd
    remove_stale_pid_file "$PID_FILE" dockerd --quiet
    if [[ -S "$SOCK" ]] && ! any_dockerd_running; then
        log "removing stale socket $SOCK (no dockerd running)"
        rm -f "$SOCK"
    fi
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
    take_lock "$LOCK_FILE"
    if engine_reachable; then  # started by a concurrent run meanwhile
        log "engine became reachable, server $(server_version)"
        return 0
    fi

    install_packages
    clear_stale_state
    mkdir -p "$(dirname "$LOG_FILE")" "$(dirname "$PID_FILE")"

    local pid
    if pid=$(live_pid_from_file "$DOCKERD_PIDFILE" dockerd); then
        # Some dockerd is alive but not answering yet (starting up, or not ours).
        log "a dockerd is already running (pid $pid) but does not answer yet; waiting for it"
    else
        log "starting dockerd (log: $LOG_FILE)"
        echo "---- $(date -u +%FT%TZ) $ME start" >>"$LOG_FILE"
        # Detached, from /, and without our fds: dockerd must not inherit (and
        # so hold forever) our lock.
        spawn_detached / "$LOG_FILE" nohup dockerd --bridge=none --iptables=false --ip6tables=false \
            -H "unix://$SOCK"
        pid=$SPAWNED_PID
        echo "$pid" >"$PID_FILE"
    fi

    local t0=$SECONDS
    wait_until_ready "$pid" dockerd "$START_TIMEOUT" "$LOG_FILE" engine_answers
    engine_reachable || die "dockerd answers on unix://$SOCK but \`docker info\` does not work (docker context?)"
    log "engine ready after $((SECONDS - t0))s: server $(server_version), client $(client_version), dockerd pid $pid"
}

# -------------------------------------------------------------- stop/status --

cmd_stop() {
    stop_daemon_from_pid_file "$PID_FILE" dockerd dockerd "$STOP_TIMEOUT" "$LOCK_FILE"
}

server_version() { docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null || echo unknown; }
client_version() { docker version --format '{{.Client.Version}}' 2>/dev/null || echo unknown; }

cmd_status() {
    if engine_reachable; then
        local owner="not started by this script" pid
        pid=$(live_pid_from_file "$PID_FILE" dockerd) && owner="started by this script, pid $pid"
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
