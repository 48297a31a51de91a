# shellcheck shell=bash
# Helpers shared by scripts/docker-engine.sh, podman-engine.sh, swift-aio.sh and
# test-images.sh. Source it after `set -euo pipefail` and after setting
#   ME          the script's name (used in messages and the default LOG_PREFIX)
#   LOG_PREFIX  optional; what starts every message (default "[$ME]")
#   LOG_FD      optional; 1 (default) or 2: where log() writes
# Sourcing installs an EXIT trap that runs the hooks registered with at_exit;
# the scripts must not set their own EXIT trap.
# Needs bash >= 4.1 (automatic file descriptors, `exec {var}>file`).

[[ -z ${_PFCON_COMMON_SH:-} ]] || return 0
_PFCON_COMMON_SH=1

# PATH inside the images the scripts build (busybox, the plugin image).
IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# The busybox test image, in Docker's store (test-images.sh) and Podman's (podman-engine.sh).
# shellcheck disable=SC2034  # read by the scripts
BUSYBOX_IMAGE=local/pfcon-busybox:1

# ------------------------------------------------------------------ logging --

LOG_PREFIX=${LOG_PREFIX:-[${ME:-${0##*/}}]}
LOG_FD=${LOG_FD:-1}

# log MESSAGE...: one line "PREFIX MESSAGE" on LOG_FD.
log() { printf '%s %s\n' "$LOG_PREFIX" "$*" >&"$LOG_FD"; }

# die MESSAGE...: "PREFIX ERROR: MESSAGE" on stderr, then exit 1 (runs the exit hooks).
die() { printf '%s ERROR: %s\n' "$LOG_PREFIX" "$*" >&2; exit 1; }

# now: the current time in seconds, with nanoseconds (for elapsed).
now() { date +%s.%N; }

# elapsed T0: seconds since T0 (a value of now), one decimal.
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# --------------------------------------------------------------- exit hooks --

_EXIT_HOOKS=()

# at_exit COMMAND [ARG...]: run COMMAND when the script exits: at its end, on an
# error, or on INT/TERM/HUP (not on SIGKILL). Hooks run last-registered first;
# a failing hook does not stop the others.
at_exit() { _EXIT_HOOKS+=("$(printf '%q ' "$@")"); }

_run_exit_hooks() {
    local i
    for ((i = ${#_EXIT_HOOKS[@]} - 1; i >= 0; i--)); do
        eval "${_EXIT_HOOKS[i]}" || true
    done
    _EXIT_HOOKS=()
}
trap _run_exit_hooks EXIT

# hold_signals: until release_signals, INT/TERM/HUP end the script only once the
# command running in the foreground has returned (bash runs a trap between
# commands), and then through `exit`, so that the exit hooks run. Without it,
# bash runs the hooks at once while, e.g., apt-get is still installing.
hold_signals() { trap 'exit 130' INT; trap 'exit 143' TERM; trap 'exit 129' HUP; }

# release_signals: back to the default actions of INT/TERM/HUP.
release_signals() { trap - INT TERM HUP; }

# -------------------------------------------------------------------- locks --

LOCK_FD=""

# take_lock FILE [TIMEOUT [MESSAGE]]: hold an exclusive flock on FILE (on the
# file descriptor LOCK_FD) until exit or release_lock; wait at most TIMEOUT s
# (300), else die with MESSAGE. Serialises concurrent runs of one script.
take_lock() {
    local file=$1 timeout=${2:-300}
    mkdir -p "$(dirname "$file")"
    exec {LOCK_FD}>"$file"
    flock -w "$timeout" "$LOCK_FD" || die "${3:-could not lock $file within ${timeout}s}"
}

# release_lock: give up the lock taken by take_lock (if any).
release_lock() {
    [[ -n $LOCK_FD ]] || return 0
    exec {LOCK_FD}>&-
    LOCK_FD=""
}

# --------------------------------------------------------------- processes --

# proc_alive PID: true while PID exists and is no zombie (a daemon we started
# and that died stays a zombie until reaped, and still has its /proc entry).
proc_alive() {
    local stat
    [[ $1 =~ ^[0-9]+$ ]] || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# pid_is PID COMM: true if PID is a live (non-zombie) process named COMM.
pid_is() {
    proc_alive "$1" && [[ "$(cat "/proc/$1/comm" 2>/dev/null)" == "$2" ]]
}

# live_pid_from_file FILE COMM: print the PID that FILE holds if it is a live
# COMM process; fail (printing nothing) if FILE is absent or stale.
live_pid_from_file() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    pid_is "$pid" "$2" || return 1
    echo "$pid"
}

# remove_stale_pid_file FILE COMM [--quiet]: delete FILE if it does not name a
# live COMM process (a daemon that is gone, or a PID reused by another program).
remove_stale_pid_file() {
    [[ -f $1 ]] || return 0
    live_pid_from_file "$1" "$2" >/dev/null && return 0
    [[ ${3:-} == --quiet ]] || log "removing stale $1 (pid '$(cat "$1" 2>/dev/null)' is not a running $2)"
    rm -f "$1"
}

# close_inherited_fds: close every file descriptor above 2 of this shell. Use it
# in a subshell that then execs a daemon or apt-get: whatever they start must
# not inherit (and so hold forever) our flock fds, nor pipes of our caller.
close_inherited_fds() {
    local fd
    for fd in /proc/"$BASHPID"/fd/*; do
        fd=${fd##*/}
        ((fd > 2)) || continue
        eval "exec $fd>&-"
    done
}

# spawn_detached DIR LOG CMD [ARG...]: start CMD in the background in its own
# session (setsid), working directory DIR, stdin /dev/null, stdout and stderr
# appended to LOG, and no inherited fds above 2. Sets SPAWNED_PID to CMD's own
# PID: a background job of a non-interactive shell is no process-group leader,
# so setsid does not fork.
SPAWNED_PID=""
spawn_detached() {
    local dir=$1 logf=$2
    shift 2
    (cd "$dir" && close_inherited_fds && exec setsid "$@" >>"$logf" 2>&1 </dev/null) &
    # shellcheck disable=SC2034  # read by the caller
    SPAWNED_PID=$!
}

# wait_until_ready PID WHAT TIMEOUT LOG CHECK [ARG...]: poll CHECK until it
# succeeds. Die, with the end of LOG, if process PID (it may still be exec'ing
# into the daemon) exits first or TIMEOUT seconds pass.
wait_until_ready() {
    local pid=$1 what=$2 timeout=$3 logf=$4 why
    shift 4
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        why=""
        if ! proc_alive "$pid"; then
            why="exited before it was ready"
        elif ((SECONDS >= deadline)); then
            why="not ready after ${timeout}s"
        fi
        if [[ -n $why ]]; then
            printf '%s ERROR: %s (pid %s) %s; end of %s:\n' "$LOG_PREFIX" "$what" "$pid" "$why" "$logf" >&2
            tail -n 30 "$logf" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
}

# stop_pid PID COMM WHAT TIMEOUT: SIGTERM process PID (named COMM) and wait for
# it to go; SIGKILL it after TIMEOUT seconds.
stop_pid() {
    local pid=$1 comm=$2 what=$3 timeout=$4
    local deadline=$((SECONDS + timeout))
    log "stopping $what (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    while pid_is "$pid" "$comm"; do
        if ((SECONDS >= deadline)); then
            log "$what did not exit after ${timeout}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 1
            break
        fi
        sleep 0.2
    done
}

# stop_daemon_from_pid_file PID_FILE COMM WHAT TIMEOUT LOCK_FILE: the `stop`
# command of a script that started one daemon: stop the COMM process PID_FILE
# names (under the script's lock), and only that one; drop a stale PID_FILE.
stop_daemon_from_pid_file() {
    local pid_file=$1 comm=$2 what=$3 timeout=$4 lock_file=$5 pid
    pid=$(cat "$pid_file" 2>/dev/null || true)
    if [[ -z $pid ]]; then
        log "no PID file $pid_file: no $what started by this script; nothing to stop"
        return 0
    fi
    take_lock "$lock_file"
    if ! pid_is "$pid" "$comm"; then
        log "$what (pid $pid) from $pid_file is not running; removing the PID file"
        rm -f "$pid_file"
        return 0
    fi
    stop_pid "$pid" "$comm" "$what" "$timeout"
    rm -f "$pid_file"
    log "$what stopped"
}

# ----------------------------------------------------------------- packages --

APT_LOCK_TIMEOUT=${APT_LOCK_TIMEOUT:-300}  # s to wait, in all, for another apt/dpkg
APT_GUARD_LOCK=/run/pfcon-ci/apt.lock          # serialises our own installs
APT_GUARD_TIMEOUT=900
POLICY_RC_D=/usr/sbin/policy-rc.d
POLICY_RC_D_BAK=$POLICY_RC_D.pfcon-bak
POLICY_RC_D_MARKER="# temporary, from pfcon's scripts: no service starts during apt-get install"
APT_INSTALL_OPTS=(-y -q --no-install-recommends
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
APT_LOG=""        # when set, apt_get appends apt-get's output to this file
MISSING_PKGS=()   # set by missing_packages and ensure_packages

# pkg_installed PKG: true if the Debian package PKG is installed.
pkg_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

# missing_packages PKG...: set MISSING_PKGS to those of PKG... not installed.
missing_packages() {
    local p
    MISSING_PKGS=()
    for p in "$@"; do pkg_installed "$p" || MISSING_PKGS+=("$p"); done
}

# apt_update_needed PKG...: true if apt knows no candidate for some PKG (on a
# fresh machine the package lists are empty); else apt-get update is skipped.
# (No `apt-cache ... | grep -q`: grep exits at the first match, apt-cache then
# dies of SIGPIPE, and with pipefail the pipeline fails: "update needed".)
apt_update_needed() {
    local p
    for p in "$@"; do
        grep -q 'Candidate: [^(]' <<<"$(apt-cache policy "$p" 2>/dev/null)" || return 0
    done
    return 1
}

# apt_get ARG...: apt-get ARG..., non-interactive, with NEEDRESTART_SUSPEND (the
# needrestart apt hook must not restart services) and without our fds. While
# another apt/dpkg holds a lock, wait: apt's own DPkg::Lock::Timeout first,
# then retries, until APT_LOCK_TIMEOUT s after the first call in all.
_APT_DEADLINE=0
apt_get() {
    ((_APT_DEADLINE)) || _APT_DEADLINE=$((SECONDS + APT_LOCK_TIMEOUT))
    local err rc wait
    err=$(mktemp)
    while :; do
        rc=0
        wait=$((_APT_DEADLINE > SECONDS ? _APT_DEADLINE - SECONDS : 1))
        if [[ -n $APT_LOG ]]; then
            _apt_get_once "$wait" "$@" >>"$APT_LOG" 2>"$err"
        else
            _apt_get_once "$wait" "$@" 2>"$err"
        fi || rc=$?
        if [[ -n $APT_LOG ]]; then cat "$err" >>"$APT_LOG"; else cat "$err" >&2; fi
        if ((rc == 0)); then rm -f "$err"; return 0; fi
        if grep -qiE 'could not get lock|unable to (acquire|lock)|is another process using it' "$err" &&
            ((SECONDS < _APT_DEADLINE)); then
            log "apt is locked by another process; retrying in 5s"
            sleep 5
            continue
        fi
        rm -f "$err"
        return "$rc"
    done
}
_apt_get_once() {  # LOCK_WAIT ARG...
    local wait=$1
    shift
    (
        close_inherited_fds
        export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
        exec apt-get -o DPkg::Lock::Timeout="$wait" "$@"
    )
}

# forbid_service_starts NAME...: make sure package maintainer scripts start no
# daemon (invoke-rc.d honours /usr/sbin/policy-rc.d; exit 101 = "forbidden"):
# an existing policy-rc.d that forbids NAME... is left alone; if there is none,
# a temporary one is created; one that allows a start is set aside and put
# back by allow_service_starts, which also runs on exit or interrupt. Signals
# are held meanwhile. Call it under the apt guard lock (see ensure_packages).
_POLICY_STATE=none  # none | created | replaced
forbid_service_starts() {
    local name rc
    # Left over by a run that was killed (SIGKILL) while it guarded an install.
    # No other run of ours is guarding now (we hold the guard lock).
    if [[ -f $POLICY_RC_D ]] && grep -qF "$POLICY_RC_D_MARKER" "$POLICY_RC_D"; then
        if [[ -e $POLICY_RC_D_BAK ]]; then
            log "restoring $POLICY_RC_D from $POLICY_RC_D_BAK (left by an interrupted run)"
            mv -f "$POLICY_RC_D_BAK" "$POLICY_RC_D"
        else
            log "removing temporary $POLICY_RC_D left by an interrupted run"
            rm -f "$POLICY_RC_D"
        fi
    fi
    hold_signals
    at_exit allow_service_starts
    if [[ ! -e $POLICY_RC_D ]]; then
        _POLICY_STATE=created
    else
        for name in "$@"; do
            rc=0
            [[ -x $POLICY_RC_D ]] && { "$POLICY_RC_D" "$name" start >/dev/null 2>&1 || rc=$?; }
            if ((rc != 101)); then
                mv -f "$POLICY_RC_D" "$POLICY_RC_D_BAK"
                _POLICY_STATE=replaced
                log "set aside $POLICY_RC_D (it allows '$name start') until the install is done"
                break
            fi
        done
    fi
    if [[ $_POLICY_STATE != none ]]; then
        printf '#!/bin/sh\n%s (%s)\nexit 101\n' "$POLICY_RC_D_MARKER" "$ME" >"$POLICY_RC_D"
        chmod 0755 "$POLICY_RC_D"
    fi
}

# allow_service_starts: undo forbid_service_starts (idempotent).
allow_service_starts() {
    case $_POLICY_STATE in
        created) rm -f "$POLICY_RC_D"; log "removed the temporary $POLICY_RC_D" ;;
        replaced) mv -f "$POLICY_RC_D_BAK" "$POLICY_RC_D"; log "restored the original $POLICY_RC_D" ;;
    esac
    _POLICY_STATE=none
    release_signals
}

# ensure_packages [--log FILE] PKG...: install those of PKG... that are missing
# (MISSING_PKGS says which; empty: nothing to do), without recommends and
# without letting maintainer scripts start daemons. apt-get update runs only if
# apt knows no candidate for one of them, and once more if the install fails
# (stale lists). Waits for other apt/dpkg runs (apt_get) and for other runs of
# our scripts (APT_GUARD_LOCK, whose policy-rc.d handling must not interleave).
# With --log, apt's output goes to FILE, and its end to stderr on failure.
ensure_packages() {
    local logf=""
    if [[ ${1:-} == --log ]]; then logf=$2; shift 2; fi
    missing_packages "$@"
    ((${#MISSING_PKGS[@]})) || return 0
    local guard_fd
    mkdir -p "$(dirname "$APT_GUARD_LOCK")"
    exec {guard_fd}>"$APT_GUARD_LOCK"
    flock -w "$APT_GUARD_TIMEOUT" "$guard_fd" ||
        die "another install by pfcon's scripts holds $APT_GUARD_LOCK for more than ${APT_GUARD_TIMEOUT}s"
    missing_packages "$@"  # a concurrent run may have installed some meanwhile
    local missing=("${MISSING_PKGS[@]}")
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        forbid_service_starts "${missing[@]}"
        APT_LOG=$logf
        if apt_update_needed "${missing[@]}"; then
            log "apt-get update"
            apt_get update -q || log "apt-get update failed; trying the install anyway"
        fi
        if ! apt_get install "${APT_INSTALL_OPTS[@]}" "${missing[@]}"; then
            log "install failed; retrying after apt-get update (package lists may be stale)"
            apt_get update -q || true
            if ! apt_get install "${APT_INSTALL_OPTS[@]}" "${missing[@]}"; then
                [[ -z $logf ]] || tail -n 20 "$logf" >&2
                die "apt-get install ${missing[*]} failed${logf:+ (see $logf)}"
            fi
        fi
        APT_LOG=""
        allow_service_starts
    fi
    exec {guard_fd}>&-
    MISSING_PKGS=("${missing[@]}")
}

# ------------------------------------------------------------------- images --

# import_busybox_image ENGINE IMAGE: build a root filesystem of busybox-static
# with one symlink per applet, an empty /tmp (1777) and /share, and import it
# with ENGINE (docker or podman) as IMAGE. Sets BUSYBOX_APPLETS (how many
# symlinks) and BUSYBOX_VERSION.
BUSYBOX_APPLETS=0 BUSYBOX_VERSION=""
import_busybox_image() {
    local engine=$1 image=$2 busybox root applet n=0 quiet=()
    ensure_packages busybox-static
    busybox=$(dpkg -L busybox-static | awk '/\/bin\/busybox$/ && !n++')  # reads all: no SIGPIPE
    root=$(mktemp -d /var/tmp/pfcon-busybox-rootfs.XXXXXX)
    at_exit rm -rf "$root"
    mkdir -p "$root/bin" "$root/tmp" "$root/share"
    chmod 1777 "$root/tmp"
    cp "$busybox" "$root/bin/busybox"
    for applet in $("$busybox" --list); do
        [[ "$applet" == busybox ]] && continue
        ln -s busybox "$root/bin/$applet"
        n=$((n + 1))
    done
    [[ $engine == podman ]] && quiet=(--quiet)
    tar --numeric-owner -C "$root" -c . |
        "$engine" import "${quiet[@]}" --change "ENV PATH=$IMAGE_PATH" --change 'WORKDIR /' \
            --message "pfcon CI: busybox-static" - "$image" >/dev/null
    rm -rf "$root"
    # shellcheck disable=SC2034  # read by the caller
    BUSYBOX_APPLETS=$n
    # shellcheck disable=SC2034
    BUSYBOX_VERSION=$(dpkg-query -W -f='${Version}' busybox-static)
}
