#!/usr/bin/env bash
# slurm-cluster.sh - a real two-node SLURM 22.05 cluster on this one machine, for
# testing a SLURM compute adapter (sbatch/squeue/scontrol/scancel as subprocesses).
#
# Usage:
#   bash scripts/slurm-cluster.sh [start]   install (Debian slurmctld, slurmd, slurm-client,
#                                           munge) if missing, configure, start munged,
#                                           slurmctld and two slurmd, wait until both nodes
#                                           are idle (idempotent)
#   bash scripts/slurm-cluster.sh stop      stop the daemons this script started (by PID),
#                                           remove the network namespace and veth
#   bash scripts/slurm-cluster.sh status    exit 0 if slurmctld answers and both nodes are up
#   eval "$(bash scripts/slurm-cluster.sh env)"   SLURM_CONF (all the client commands need)
#   bash scripts/slurm-cluster.sh ctld-stop|ctld-start    stop/start only slurmctld
#   bash scripts/slurm-cluster.sh node-down|node-up node2 cut/restore node2's network link
#                                           (a node failure mid-job)
#
# Layout:
#   slurmctld    host network namespace, SlurmctldHost=<hostname -s>(10.213.0.1)
#   node1        slurmd -N node1 in the host namespace, NodeAddr=10.213.0.1
#   node2        slurmd -N node2 in network namespace pfcon-slurm2, NodeAddr=10.213.0.2
#                (veth pfslurm-h 10.213.0.1/24 on the host <-> pfslurm-n 10.213.0.2/24)
#   partition    debug (Default), both nodes, MaxTime=INFINITE; each node CPUs=2 RealMemory=4000
#   Both nodes see the same filesystem (a network namespace does not change mounts), so any
#   directory is shared; `docker` reaches the engine (scripts/docker-engine.sh, which start
#   runs first) through /var/run/docker.sock from either node.
#
# State: /var/lib/pfcon-slurm (slurm.conf, ctld-state/, spool/<node>/, run/*.pid, log/).
# Knobs: SLURM_CLUSTER_START_TIMEOUT (60 s), SLURM_CLUSTER_NO_DOCKER=1 (skip docker-engine.sh).
#
# Timers chosen for tests: MinJobAge=10 (a finished job is forgotten by squeue/scontrol
# 10-20 s after it ends), SlurmdTimeout=10 (a node whose link is cut is DOWN ~10-20 s later,
# its running jobs end as NODE_FAIL), ReturnToService=2 (it comes back on node-up),
# JobRequeue=0 (a NODE_FAIL batch job is not requeued), KillWait=5, MessageTimeout=5.
#
# Pitfalls found on Debian 12 (slurm-wlm 22.05.8, munge 0.5.15), no systemd:
#  * The packages' postinst would start daemons: a temporary policy-rc.d forbids it
#    (lib/common.sh ensure_packages). munge's postinst writes a 128-byte /etc/munge/munge.key;
#    it is replaced by 1024 random bytes (owner munge, mode 400) while no munged runs.
#    munged is started as user munge with --force; /run/munge must exist (owner munge).
#  * slurmctld only runs where the name in SlurmctldHost is this machine's `hostname -s`
#    ("This host (...) not a valid controller"), so the name is taken at config time and the
#    address in parentheses (10.213.0.1) is what daemons and clients connect to; no DNS or
#    /etc/hosts entry is needed for it, nor for node1/node2 (NodeAddr is an IP address).
#  * slurmd in the netns reaches munged by its unix socket path (/run/munge/munge.socket.2):
#    path sockets are not tied to a network namespace. node2's slurmd is started with
#    `nsenter --net=/run/netns/pfcon-slurm2` (not `ip netns exec`, which also makes a new
#    mount namespace and remounts /sys) so its PID is the slurmd's own.
#  * Two slurmd on one machine: distinct SlurmdSpoolDir/SlurmdPidFile/SlurmdLogFile via %n;
#    both listen on 6818 but in different network namespaces, so no port clash.
#  * No cgroup plugins: ProctrackType=proctrack/linuxproc, TaskPlugin=task/none,
#    JobAcctGatherType=jobacct_gather/none (nothing in slurm.conf loads cgroup.conf, which
#    Debian does not ship). SlurmdParameters=config_overrides: both nodes claim CPUs=2
#    RealMemory=4000 of the one machine (no oversubscription check against the hardware).
#  * node-down downs the namespace side of the veth: the host keeps 10.213.0.1, so slurmctld,
#    node1 and the clients are unaffected.
#  * With slurmctld down (its port refuses connections), the clients retry the connection
#    for MessageTimeout-1 s per RPC and then fail (measured, MessageTimeout=5; 10 gives 9/18 s):
#      squeue                  exit 1 after 4.0 s  "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"
#      squeue -j N, scontrol show job N
#                              exit 1 after 8.0 s  (two RPCs), same text ("slurm_load_jobs error: ...")
#      sbatch                  exit 1 after 4.0 s  "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"
#      scancel N               exit 8 (!) after 4.0 s  "scancel: error: Kill job error on job id N: Unable to contact slurm controller (connect failure)"
#      sinfo                   exit 1 after 4.0 s  "slurm_load_partitions: Unable to contact slurm controller (connect failure)"
#      scontrol ping           exit 1 at once, "Slurmctld(primary) at <host> is DOWN"
#    Running jobs keep running on the nodes; slurmctld saves its state in ctld-state/, and
#    after ctld-start (0.2 s until it answers) it knows them again; a job submitted just before
#    the stop is recovered PENDING and starts ~5 s after the restart.
#  * `squeue -j N` for a job that has finished but is still remembered prints NOTHING and exits 0
#    (it lists pending/running/completing only): use `squeue -t all -j N` or `scontrol show job N`.
#    Once forgotten (MinJobAge=10 plus slurmctld's purge loop: ~18 s after the end, measured),
#    `squeue -j N` and `scontrol show job N` exit 1 with "slurm_load_jobs error: Invalid job id
#    specified", while `squeue -j N,M` with all of them forgotten prints nothing and exits 0.
#    No accounting: sacct cannot help.
#  * node-down with a job running on node2: node2 "not responding" (alloc*) after ~6 s, DOWN and
#    the job NODE_FAIL (Reason=NodeDown, Requeue=0, not requeued) ~15 s after the cut; the
#    job's processes on node2 keep running until node-up, then slurmd kills them. node-up: node2
#    idle again after ~30 s (ReturnToService=2; it re-registers on slurmctld's next ping).
#  * Without DefMemPerCPU, CR_Core_Memory gives a job without --mem the whole node's memory,
#    so one job per node: DefMemPerCPU=500 is set.
#  * Harmless noise in the logs: "mpi/pmix: can not load PMIx library", "Configured MailProg is
#    invalid" (MailProg=/bin/true silences it), "Could not open ... state file" on a first start.
#    slurmctld/slurmd run with -D (foreground, the PID we record is theirs) and so also log to
#    log/*.out, which also catches errors before the log file is open (e.g. a slurm.conf parse error).
set -euo pipefail

ME=slurm-cluster.sh
LOG_PREFIX="slurm-cluster:"
# shellcheck disable=SC2034  # read by lib/common.sh
LOG_FD=2  # stdout is for `env`
SCRIPT_DIR=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
. "$SCRIPT_DIR/lib/common.sh"

STATE=/var/lib/pfcon-slurm
CONF=$STATE/slurm.conf
LOG_DIR=$STATE/log
RUN_DIR=$STATE/run
LOCK_FILE=/run/pfcon-ci/slurm-cluster.lock
START_TIMEOUT=${SLURM_CLUSTER_START_TIMEOUT:-60}
STOP_TIMEOUT=20

NETNS=pfcon-slurm2
VETH_HOST=pfslurm-h
VETH_NS=pfslurm-n
HOST_ADDR=10.213.0.1
NS_ADDR=10.213.0.2
NODES=(node1 node2)
PARTITION=debug

MUNGE_KEY=/etc/munge/munge.key
MUNGE_SOCKET=/run/munge/munge.socket.2
MUNGED_OWN_PID=/run/munge/munged.pid   # munged's own PID file
MUNGED_PID=$RUN_DIR/munged.pid         # ours: only a munged we started is stopped
CTLD_PID=$RUN_DIR/slurmctld.pid
CTLD_LOG=$LOG_DIR/slurmctld.log
PACKAGES=(slurmctld slurmd slurm-client munge iproute2 util-linux)

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

slurmd_pid_file() { echo "$RUN_DIR/slurmd-$1.pid"; }
slurmd_log() { echo "$LOG_DIR/slurmd-$1.log"; }
export SLURM_CONF=$CONF

# ---------------------------------------------------------------- install --

install_packages() {
    mkdir -p "$LOG_DIR"
    ensure_packages --log "$LOG_DIR/apt.log" "${PACKAGES[@]}"
    local cmd
    for cmd in slurmctld slurmd sbatch squeue scontrol scancel munged nsenter; do
        command -v "$cmd" >/dev/null || die "$cmd not found after installing ${PACKAGES[*]}"
    done
}

# ------------------------------------------------------------------ munge --

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

# A munged that has exited stays a zombie until init reaps it (this machine's init can
# take a while): it is not running, and a stop followed by a start must start one.
any_munged_running() {
    local d
    for d in /proc/[0-9]*; do
        pid_is "${d#/proc/}" munged && return 0
    done
    return 1
}

ensure_munge() {
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    if munge_works; then
        return 0
    fi
    if ! any_munged_running; then
        if [[ ! -f $MUNGE_KEY || $(stat -c %s "$MUNGE_KEY") != 1024 ]]; then
            log "writing a new $MUNGE_KEY (1024 random bytes)"
            mkdir -p /etc/munge
            head -c 1024 /dev/urandom >"$MUNGE_KEY.tmp"
            mv -f "$MUNGE_KEY.tmp" "$MUNGE_KEY"
        fi
        chown munge:munge /etc/munge "$MUNGE_KEY"
        chmod 700 /etc/munge
        chmod 400 "$MUNGE_KEY"
        mkdir -p /run/munge /var/lib/munge /var/log/munge
        chown munge:munge /run/munge /var/lib/munge /var/log/munge
        chmod 755 /run/munge
        rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock" "$MUNGED_OWN_PID"
        log "starting munged --force (as user munge)"
        (close_inherited_fds && exec setpriv --reuid=munge --regid=munge --init-groups \
            /usr/sbin/munged --force) >>"$LOG_DIR/munged.out" 2>&1 </dev/null ||
            die "munged failed to start: $(tail -n 5 "$LOG_DIR/munged.out" /var/log/munge/munged.log 2>/dev/null)"
        local pid deadline=$((SECONDS + 10))
        until pid=$(live_pid_from_file "$MUNGED_OWN_PID" munged); do
            ((SECONDS < deadline)) || die "munged wrote no PID file $MUNGED_OWN_PID"
            sleep 0.1
        done
        echo "$pid" >"$MUNGED_PID"
    fi
    local deadline=$((SECONDS + 10))
    until munge_works; do
        ((SECONDS < deadline)) || die "munge -n | unmunge fails (a munged runs but does not answer on $MUNGE_SOCKET?)"
        sleep 0.2
    done
    log "munge works (munged pid $(cat "$MUNGED_OWN_PID" 2>/dev/null || echo '?'))"
}

# ---------------------------------------------------------------- network --

ensure_network() {
    [[ -e /run/netns/$NETNS ]] || { log "creating network namespace $NETNS"; ip netns add "$NETNS"; }
    if ! ip link show "$VETH_HOST" >/dev/null 2>&1; then
        log "creating veth $VETH_HOST ($HOST_ADDR) <-> $NETNS:$VETH_NS ($NS_ADDR)"
        ip netns exec "$NETNS" ip link del "$VETH_NS" 2>/dev/null || true
        ip link add "$VETH_HOST" type veth peer name "$VETH_NS" netns "$NETNS"
    fi
    grep -q "inet $HOST_ADDR/" <<<"$(ip addr show dev "$VETH_HOST")" || ip addr add "$HOST_ADDR/24" dev "$VETH_HOST"
    ip link set "$VETH_HOST" up
    ip netns exec "$NETNS" sh -c "
        ip link set lo up
        ip addr show dev $VETH_NS | grep 'inet $NS_ADDR/' >/dev/null || ip addr add $NS_ADDR/24 dev $VETH_NS
        ip link set $VETH_NS up"
}

remove_network() {
    if ip link show "$VETH_HOST" >/dev/null 2>&1; then
        log "removing veth $VETH_HOST"
        ip link del "$VETH_HOST"
    fi
    if [[ -e /run/netns/$NETNS ]]; then
        log "removing network namespace $NETNS"
        ip netns del "$NETNS"
    fi
}

# ----------------------------------------------------------------- config --

write_config() {
    local host tmp
    host=$(hostname -s)
    mkdir -p "$STATE/ctld-state" "$STATE/spool" "$LOG_DIR" "$RUN_DIR"
    local n
    for n in "${NODES[@]}"; do mkdir -p "$STATE/spool/$n"; done
    tmp=$(mktemp "$CONF.XXXXXX")
    cat >"$tmp" <<EOF
# Written by scripts/slurm-cluster.sh; rewritten on every start.
ClusterName=pfcon
SlurmctldHost=$host($HOST_ADDR)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
SchedulerType=sched/builtin
SchedulerParameters=batch_sched_delay=0,sched_interval=2,sched_min_interval=0
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
SlurmdParameters=config_overrides
StateSaveLocation=$STATE/ctld-state
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$RUN_DIR/slurmctld.daemon.pid
SlurmdPidFile=$RUN_DIR/slurmd-%n.daemon.pid
SlurmctldLogFile=$CTLD_LOG
SlurmdLogFile=$LOG_DIR/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldPort=6817
SlurmdPort=6818
MinJobAge=10
SlurmdTimeout=10
SlurmctldTimeout=10
InactiveLimit=0
ReturnToService=2
JobRequeue=0
KillWait=5
MessageTimeout=5
TCPTimeout=2
Waittime=0
TreeWidth=50
NodeName=node1 NodeAddr=$HOST_ADDR NodeHostname=$host CPUs=2 RealMemory=4000 State=UNKNOWN
NodeName=node2 NodeAddr=$NS_ADDR NodeHostname=$host CPUs=2 RealMemory=4000 State=UNKNOWN
PartitionName=$PARTITION Nodes=node1,node2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    chmod 644 "$tmp"
    if cmp -s "$tmp" "$CONF"; then
        rm -f "$tmp"
        CONF_CHANGED=0
    else
        mv -f "$tmp" "$CONF"
        CONF_CHANGED=1
    fi
}

# ---------------------------------------------------------------- daemons --

ctld_pid() { live_pid_from_file "$CTLD_PID" slurmctld; }
slurmd_pid() { live_pid_from_file "$(slurmd_pid_file "$1")" slurmd; }
# slurmd_started NODE: the process spawned for NODE's slurmd is alive. Just after the
# spawn it may still be the wrapper (bash, setsid, nsenter) on its way to exec slurmd,
# which slurmd_pid does not count as slurmd: a loaded machine once failed a start so.
slurmd_started() {
    local pid
    pid=$(cat "$(slurmd_pid_file "$1")" 2>/dev/null) && proc_alive "$pid"
}

ctld_answers() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

start_ctld() {
    local pid
    if pid=$(ctld_pid); then
        return 0
    fi
    rm -f "$CTLD_PID" "$RUN_DIR/slurmctld.daemon.pid"
    log "starting slurmctld (log: $CTLD_LOG)"
    echo "---- $(date -u +%FT%TZ) $ME start" >>"$LOG_DIR/slurmctld.out"
    # -D: foreground, so that the PID we record is the daemon's; -i: ignore unreadable state.
    spawn_detached / "$LOG_DIR/slurmctld.out" slurmctld -D -i -f "$CONF"
    echo "$SPAWNED_PID" >"$CTLD_PID"
    local deadline=$((SECONDS + START_TIMEOUT))
    until ctld_answers; do
        proc_alive "$SPAWNED_PID" || die_with_logs "slurmctld (pid $SPAWNED_PID) exited before it answered"
        ((SECONDS < deadline)) || die_with_logs "slurmctld (pid $SPAWNED_PID) does not answer \`scontrol ping\` after ${START_TIMEOUT}s"
        sleep 0.2
    done
}

start_slurmd() {
    local node=$1 pid cmd=()
    if pid=$(slurmd_pid "$node"); then
        return 0
    fi
    rm -f "$(slurmd_pid_file "$node")" "$RUN_DIR/slurmd-$node.daemon.pid"
    [[ $node == node2 ]] && cmd=(nsenter "--net=/run/netns/$NETNS")
    log "starting slurmd -N $node${cmd:+ in netns $NETNS} (log: $(slurmd_log "$node"))"
    echo "---- $(date -u +%FT%TZ) $ME start" >>"$LOG_DIR/slurmd-$node.out"
    spawn_detached / "$LOG_DIR/slurmd-$node.out" "${cmd[@]}" slurmd -D -N "$node" -f "$CONF"
    echo "$SPAWNED_PID" >"$(slurmd_pid_file "$node")"
}

# Node states as "name state" lines (sinfo -N; a '*' suffix means not responding).
node_states() { sinfo -h -N -p "$PARTITION" -o '%N %T' 2>/dev/null; }

nodes_idle() {
    local states
    states=$(node_states) || return 1
    [[ $(grep -cE '^node[12] (idle|mixed|allocated|completing)$' <<<"$states") == 2 ]]
}

die_with_logs() {
    printf '%s ERROR: %s\n' "$LOG_PREFIX" "$1" >&2
    local f
    for f in "$CTLD_LOG" "$LOG_DIR/slurmctld.out" "$(slurmd_log node1)" "$LOG_DIR/slurmd-node1.out" \
        "$(slurmd_log node2)" "$LOG_DIR/slurmd-node2.out"; do
        [[ -s $f ]] || continue
        printf -- '---- end of %s:\n' "$f" >&2
        tail -n 15 "$f" >&2
    done
    exit 1
}

wait_nodes_idle() {
    local deadline=$((SECONDS + START_TIMEOUT)) n
    until nodes_idle; do
        for n in "${NODES[@]}"; do
            slurmd_started "$n" || die_with_logs "slurmd for $n exited; sinfo: $(node_states | tr '\n' ';')"
        done
        ctld_pid >/dev/null || die_with_logs "slurmctld exited"
        ((SECONDS < deadline)) || die_with_logs "nodes not idle after ${START_TIMEOUT}s; sinfo: $(node_states | tr '\n' ';')"
        # A node that was DOWN (e.g. left so by a stopped cluster) comes back with ReturnToService=2
        # once its slurmd registers; nudge nodes that stay down/drained for another reason.
        sleep 0.5
    done
}

# ------------------------------------------------------------------ start --

CONF_CHANGED=0
cmd_start() {
    ((EUID == 0)) || die "needs root"
    local t0
    t0=$(now)
    take_lock "$LOCK_FILE"
    install_packages
    if [[ ${SLURM_CLUSTER_NO_DOCKER:-0} != 1 ]]; then
        bash "$SCRIPT_DIR/docker-engine.sh" start >&2
    fi
    ensure_munge
    ensure_network
    write_config
    local n
    if ((CONF_CHANGED)) && ctld_pid >/dev/null; then
        log "slurm.conf changed: restarting the daemons"
        stop_daemons
    fi
    start_ctld
    for n in "${NODES[@]}"; do start_slurmd "$n"; done
    wait_nodes_idle
    log "cluster ready after $(elapsed "$t0")s: $(node_states | tr '\n' ' ')(SLURM_CONF=$CONF)"
}

# ------------------------------------------------------------ stop/status --

stop_daemons() {
    local n pid
    for n in "${NODES[@]}"; do
        if pid=$(slurmd_pid "$n"); then
            stop_pid "$pid" slurmd "slurmd $n" "$STOP_TIMEOUT"
        fi
        rm -f "$(slurmd_pid_file "$n")"
    done
    if pid=$(ctld_pid); then
        stop_pid "$pid" slurmctld slurmctld "$STOP_TIMEOUT"
    fi
    rm -f "$CTLD_PID"
}

cmd_stop() {
    take_lock "$LOCK_FILE"
    stop_daemons
    local pid
    if pid=$(live_pid_from_file "$MUNGED_PID" munged); then
        stop_pid "$pid" munged munged "$STOP_TIMEOUT"
    fi
    rm -f "$MUNGED_PID"
    remove_network
    log "stopped"
}

cmd_status() {
    local rc=0 n pid
    if pid=$(ctld_pid); then log "slurmctld pid $pid"; else log "slurmctld NOT running (started by this script)"; rc=1; fi
    for n in "${NODES[@]}"; do
        if pid=$(slurmd_pid "$n"); then log "slurmd $n pid $pid"; else log "slurmd $n NOT running"; rc=1; fi
    done
    if ctld_answers; then
        log "sinfo: $(node_states | tr '\n' ' ')"
        nodes_idle || { log "not both nodes up"; rc=1; }
    else
        log "slurmctld does not answer (SLURM_CONF=$CONF)"
        rc=1
    fi
    return "$rc"
}

cmd_env() {
    echo "export SLURM_CONF=$CONF"
}

cmd_ctld_stop() {
    take_lock "$LOCK_FILE"
    local pid
    if pid=$(ctld_pid); then
        stop_pid "$pid" slurmctld slurmctld "$STOP_TIMEOUT"
    else
        log "slurmctld is not running"
    fi
    rm -f "$CTLD_PID"
}

cmd_ctld_start() {
    [[ -f $CONF ]] || die "no $CONF: run start first"
    take_lock "$LOCK_FILE"
    local t0
    t0=$(now)
    start_ctld
    log "slurmctld answers after $(elapsed "$t0")s"
}

netns_link() {  # up|down NODE
    [[ ${2:-} == node2 ]] || die "only node2 has its own link (got '${2:-}')"
    [[ -e /run/netns/$NETNS ]] || die "no network namespace $NETNS: run start first"
    ip netns exec "$NETNS" ip link set "$VETH_NS" "$1"
    log "node2's link ($NETNS:$VETH_NS) is $1"
}

case "${1:-start}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    ctld-stop) cmd_ctld_stop ;;
    ctld-start) cmd_ctld_start ;;
    node-down) netns_link down "${2:-}" ;;
    node-up) netns_link up "${2:-}" ;;
    -h | --help) usage ;;
    *) die "unknown subcommand '$1' (use start, stop, status, env, ctld-stop, ctld-start, node-down, node-up)" ;;
esac
