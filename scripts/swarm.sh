#!/usr/bin/env bash
# Start, stop or query a one-node Docker Swarm on the project's Docker engine, for
# CONTAINER_ENV=swarm (`make run` with it, and the swarm tests).
#
# Usage: scripts/swarm.sh [start|stop|status]      (default: start)
#
#   start   Start the engine first (scripts/docker-engine.sh start; DOCKER_HOST is
#           respected), then make it a swarm manager:
#             docker swarm init --advertise-addr 127.0.0.1
#           Exit 0 at once if the engine is a manager already. A node stuck in
#           swarm state "pending" or "error" leaves its broken swarm first; a
#           worker of some other swarm is refused (point DOCKER_HOST at a manager).
#           The swarm works on the engine as docker-engine.sh starts it
#           (--bridge=none --iptables=false): swarm init creates the ingress
#           overlay and docker_gwbridge, and job services publish no port and
#           join no network, so nothing needs iptables.
#   stop    Leave the swarm this script created (`docker swarm leave --force`,
#           which removes every service), and only that one (its node id is
#           recorded at init).
#   status  Say whether the engine is a swarm manager.
#
# Idempotent: run `start` as often as you like. State file: /run/pfcon-ci/swarm.node.
set -euo pipefail

ME=swarm.sh
NODE_FILE=/run/pfcon-ci/swarm.node   # the node id of the swarm this script created
LOCK_FILE=/run/pfcon-ci/swarm.lock   # serialises concurrent start/stop
ADVERTISE_ADDR=127.0.0.1
READY_TIMEOUT=30

# shellcheck source=lib/common.sh source-path=SCRIPTDIR
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib/common.sh"
HERE=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")

# The engine's swarm state: inactive, pending, active, error or locked.
node_state() { docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unreachable; }
is_manager() { [[ "$(docker info --format '{{.Swarm.ControlAvailable}}' 2>/dev/null)" == true ]]; }
node_id() { docker info --format '{{.Swarm.NodeID}}' 2>/dev/null; }

# True once the manager answers cluster requests (a fresh manager needs a moment).
manager_answers() { docker node ls >/dev/null 2>&1; }

wait_manager() {
    local deadline=$((SECONDS + READY_TIMEOUT))
    until manager_answers; do
        ((SECONDS < deadline)) || die "the swarm manager does not answer \`docker node ls\` after ${READY_TIMEOUT}s"
        sleep 0.5
    done
}

cmd_start() {
    bash "$HERE/docker-engine.sh" start
    if [[ "$(node_state)" == active ]] && is_manager; then
        wait_manager
        log "already a swarm manager (node $(node_id))"
        return 0
    fi
    take_lock "$LOCK_FILE"
    local state
    state=$(node_state)
    case "$state" in
        active)
            is_manager || die "this engine is a worker of another swarm; point DOCKER_HOST at a manager"
            wait_manager
            log "became a swarm manager meanwhile (node $(node_id))"
            return 0
            ;;
        pending | error)
            log "swarm state is '$state': leaving the broken swarm first"
            docker swarm leave --force >/dev/null
            ;;
        locked) die "the swarm is locked (autolock): unlock it with \`docker swarm unlock\`" ;;
        inactive) ;;
        *) die "cannot read the engine's swarm state (${DOCKER_HOST:-default host}): $state" ;;
    esac
    local t0
    t0=$(now)
    docker swarm init --advertise-addr "$ADVERTISE_ADDR" >/dev/null
    wait_manager
    mkdir -p "$(dirname "$NODE_FILE")"
    node_id >"$NODE_FILE"
    log "swarm manager ready after $(elapsed "$t0")s (node $(node_id), advertise $ADVERTISE_ADDR)"
}

cmd_stop() {
    take_lock "$LOCK_FILE"
    if [[ "$(node_state)" != active ]]; then
        log "not in a swarm; nothing to do"
        return 0
    fi
    local ours
    ours=$(cat "$NODE_FILE" 2>/dev/null || true)
    if [[ -z "$ours" || "$ours" != "$(node_id)" ]]; then
        log "the swarm (node $(node_id)) was not created by this script; left alone"
        return 0
    fi
    docker swarm leave --force >/dev/null
    rm -f "$NODE_FILE"
    log "left the swarm"
}

cmd_status() {
    local state
    state=$(node_state)
    if [[ "$state" == active ]] && is_manager; then
        log "swarm manager at ${DOCKER_HOST:-unix:///var/run/docker.sock} (node $(node_id), $(docker info --format '{{.Swarm.Nodes}}') node(s))"
    else
        log "NOT a swarm manager at ${DOCKER_HOST:-unix:///var/run/docker.sock} (swarm state: $state)"
        return 1
    fi
}

case "${1:-start}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    -h | --help) sed -n '2,24s/^# \{0,1\}//p' "$0" ;;
    *) die "unknown subcommand '$1' (use start, stop or status)" ;;
esac
