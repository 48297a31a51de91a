#!/usr/bin/env bash
# swift-aio.sh - local OpenStack Swift all-in-one for pfcon development and CI.
#
# Debian 12 (bookworm) packages, no systemd, run as root. Everything listens on
# 127.0.0.1 only: proxy 127.0.0.1:8080 (tempauth, auth v1), account/container/object
# servers 127.0.0.1:6202/6201/6200, memcached 127.0.0.1:11211 (TCP only), and a
# private rsyslogd that reads a UNIX socket (no /dev/log, no UDP).
#
# Usage:
#   bash scripts/swift-aio.sh [start]   install if missing, write config, build rings if
#                                       missing, start, wait healthy, curl smoke test
#   bash scripts/swift-aio.sh stop      stop only the processes this script started
#   bash scripts/swift-aio.sh status    per-process state + health (exit 0 = all up)
#   bash scripts/swift-aio.sh reset     stop + wipe objects and rings + start
#   eval "$(bash scripts/swift-aio.sh env)"   SWIFT_* (pfcon names) and ST_* (swift CLI)
#
# Accounts (tempauth, auth URL http://127.0.0.1:8080/auth/v1.0):
#   chris:chris1234 / testing   (.admin; pfcon dev default; container "users" is created)
#   test:tester / testing (.admin), test:tester2 / testing2 (.admin), test:tester3 / testing3,
#   test2:tester2 / testing2 (.admin), admin:admin / admin (.reseller_admin)
#
# Layout: config + rings /etc/swift, data $SWIFT_DATA (default /srv/pfcon-swift, needs
# user xattrs), logs /var/log/pfcon-swift/<program>.log (+ <name>.out = stdout/stderr),
# PIDs /run/pfcon-swift/<name>.pid.
#
# Knobs (environment): SWIFT_DATA, SWIFT_PROXY_PORT (8080), SWIFT_PROXY_WORKERS (2),
#   SWIFT_MEMCACHED_PORT (11211), SWIFT_PART_POWER (8), SWIFT_LOG_REQUESTS (true: backend
#   servers log every request), SWIFT_S3API (1: s3api middleware, access key
#   "test:tester", secret "testing"), SWIFT_ACCESS_LOG (0; 1 = proxy access log, see below),
#   SWIFT_START_TIMEOUT (30 s).
#
# Why no proxy access log by default: Swift's proxy-logging middleware ignores
# log_address, so its access logger either uses /dev/log (absent here) or UDP syslog
# through an unconnected socket, which the kernel binds to 0.0.0.0:<ephemeral>. With
# SWIFT_ACCESS_LOG=1 the access log is sent to the private rsyslogd on 127.0.0.1:5514
# (UDP) and lands in proxy-server.log, at the price of such 0.0.0.0 client sockets
# showing in `ss -lu`. Backend servers log each request anyway (SWIFT_LOG_REQUESTS).
set -euo pipefail

ME=$(basename "$0" .sh)
LOG_PREFIX="$ME:"
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib/common.sh"
T0=$(now)
since() { printf '%s s' "$(elapsed "$T0")"; }

# ---------------------------------------------------------------- settings
SWIFT_DATA=${SWIFT_DATA:-/srv/pfcon-swift}
PROXY_PORT=${SWIFT_PROXY_PORT:-8080}
PROXY_WORKERS=${SWIFT_PROXY_WORKERS:-2}
MEMCACHED_PORT=${SWIFT_MEMCACHED_PORT:-11211}
PART_POWER=${SWIFT_PART_POWER:-8}
LOG_REQUESTS=${SWIFT_LOG_REQUESTS:-true}
S3API=${SWIFT_S3API:-1}
ACCESS_LOG=${SWIFT_ACCESS_LOG:-0}
START_TIMEOUT=${SWIFT_START_TIMEOUT:-30}
ACCESS_LOG_PORT=5514
OBJECT_PORT=6200 CONTAINER_PORT=6201 ACCOUNT_PORT=6202

HOST=127.0.0.1
ETC=/etc/swift
RUN_DIR=/run/pfcon-swift
LOG_DIR=/var/log/pfcon-swift
DEVICES=$SWIFT_DATA/devices
RECON=$SWIFT_DATA/cache
LOG_SOCK=$RUN_DIR/log.sock
AUTH_URL=http://$HOST:$PROXY_PORT/auth/v1.0
PFCON_USER=chris:chris1234 PFCON_KEY=testing PFCON_CONTAINER=users
SMOKE_CONTAINER=swift-aio-smoke
PKGS=(swift swift-proxy swift-account swift-container swift-object memcached rsyslog curl)
# Order matters: logging first, proxy last. stop goes in reverse.
PROCS=(rsyslogd memcached account-server container-server object-server
       object-updater container-updater proxy-server)
# Clean environment for the servers (Debian's /usr/bin/python3, no pyenv/venv leaking in).
CLEAN_ENV=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8)

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

# ---------------------------------------------------------------- helpers
proc_cmd() { # name -> command line used to start it
    case $1 in
        rsyslogd) echo "rsyslogd -n -iNONE -f $RUN_DIR/rsyslog.conf" ;;
        memcached) echo "memcached -l $HOST -p $MEMCACHED_PORT -U 0 -u memcache -m 64 -c 1024" ;;
        account-server|container-server|object-server|proxy-server)
            echo "swift-$1 $ETC/$1.conf" ;;
        object-updater) echo "swift-object-updater $ETC/object-server.conf" ;;
        container-updater) echo "swift-container-updater $ETC/container-server.conf" ;;
        *) die "unknown process $1" ;;
    esac
}
proc_marker() { # name -> string that must appear in /proc/PID/cmdline (independent of knobs,
                 # so that a process started with other settings is still recognised and stopped)
    case $1 in
        rsyslogd) echo "rsyslogd -n -iNONE -f $RUN_DIR/rsyslog.conf" ;;
        memcached) echo "memcached -l $HOST -p " ;;
        *) proc_cmd "$1" ;;
    esac
}
proc_port() {
    case $1 in
        memcached) echo "$MEMCACHED_PORT" ;; account-server) echo "$ACCOUNT_PORT" ;;
        container-server) echo "$CONTAINER_PORT" ;; object-server) echo "$OBJECT_PORT" ;;
        proxy-server) echo "$PROXY_PORT" ;; *) echo "" ;;
    esac
}

# Prints the PID of a process we started and that is still the same program, else fails.
our_pid() {
    local f=$RUN_DIR/$1.pid pid
    [[ -r $f ]] || return 1
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$(proc_marker "$1")" || return 1
    echo "$pid"
}

# True while PID, or a member of its process group, exists and is not a zombie (PID 1 on
# this machine kind reaps orphans only every ~2 s, so `kill -0` would see zombies).
still_running() {
    ps -eo pid=,pgid=,stat= | awk -v p="$1" '($1 == p || $2 == p) && $3 !~ /^Z/ {f = 1} END {exit !f}'
}

port_busy() { [[ -n $(ss -Htln "sport = :$1" 2>/dev/null) ]]; }

http_ok() { curl -fsS -m 2 -o /dev/null "$1" 2>/dev/null; }

memcached_ok() {
    ( exec 3<>"/dev/tcp/$HOST/$MEMCACHED_PORT" && printf 'version\r\n' >&3 \
        && IFS= read -r -t 2 line <&3 && [[ $line == VERSION* ]] ) 2>/dev/null
}

proc_healthy() {
    case $1 in
        rsyslogd) [[ -S $LOG_SOCK ]] ;;
        memcached) memcached_ok ;;
        account-server|container-server|object-server|proxy-server)
            http_ok "http://$HOST:$(proc_port "$1")/healthcheck" ;;
        *) return 0 ;;
    esac
}

# put_file PATH MODE OWNER:GROUP < content ; rewrites PATH only if the content differs.
# (Running processes are restarted by start_procs when the config hash changes.)
put_file() {
    local dst=$1 mode=$2 owner=$3 tmp
    tmp=$(mktemp "$dst.XXXXXX")
    cat >"$tmp"
    if [[ -f $dst ]] && cmp -s "$tmp" "$dst"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$dst"
    fi
    chmod "$mode" "$dst"; chown "$owner" "$dst"
}

need_root() { [[ $(id -u) == 0 ]] || die "must run as root (installs packages, binds ports, writes /etc/swift)"; }

lock() { take_lock "$RUN_DIR/.lock" 300 "another $ME is running (lock $RUN_DIR/.lock)"; }

# ---------------------------------------------------------------- install
install_pkgs() {
    # Debian's postinst scripts run `invoke-rc.d <svc> start`: with their default configs
    # the Swift servers, memcached and rsyslog would start (Swift on 0.0.0.0);
    # ensure_packages forbids that with a policy-rc.d.
    ensure_packages --log "$LOG_DIR/apt.log" "${PKGS[@]}"
    if ((${#MISSING_PKGS[@]} == 0)); then
        log "packages present ($(dpkg-query -W -f='${Version}' swift-proxy))"
    else
        log "installed swift $(dpkg-query -W -f='${Version}' swift-proxy) (at $(since))"
    fi
}

# ---------------------------------------------------------------- config
check_xattrs() {
    local probe=$DEVICES/.xattr-probe
    : >"$probe"
    if ! /usr/bin/python3 -c 'import os,sys; os.setxattr(sys.argv[1], "user.swift.probe", b"1")' "$probe" 2>/dev/null; then
        rm -f "$probe"
        die "$DEVICES does not support user xattrs (needed by the object server); set SWIFT_DATA to a directory on ext4/xfs"
    fi
    rm -f "$probe"
}

write_config() {
    id swift >/dev/null 2>&1 || die "user 'swift' missing (python3-swift postinst should create it)"
    install -d -m 0755 "$RUN_DIR" "$LOG_DIR"
    install -d -m 0755 -o root -g swift "$ETC"
    install -d -m 0755 -o swift -g swift "$SWIFT_DATA" "$DEVICES" "$DEVICES/d1" "$RECON"
    check_xattrs

    local common="bind_ip = $HOST
user = swift
swift_dir = $ETC
devices = $DEVICES
mount_check = false
disable_fallocate = true
recon_cache_path = $RECON
log_address = $LOG_SOCK
log_level = INFO"

    put_file "$ETC/swift.conf" 0644 root:swift <<EOF
# written by $ME
[swift-hash]
swift_hash_path_prefix = pfcon-aio
swift_hash_path_suffix = pfcon-aio

[storage-policy:0]
name = Policy-0
default = yes

[swift-constraints]
EOF

    # The account, container and object servers differ only in their port and
    # in the daemons listed after the common sections (only the updaters run).
    local server port daemons d
    for server in account container object; do
        case $server in
            account) port=$ACCOUNT_PORT daemons="replicator auditor reaper" ;;
            container) port=$CONTAINER_PORT daemons="updater replicator auditor sync sharder" ;;
            object) port=$OBJECT_PORT daemons="updater replicator reconstructor auditor" ;;
        esac
        {
            cat <<EOF
# written by $ME
[DEFAULT]
bind_port = $port
workers = 1
log_name = $server-server
$common

[pipeline:main]
pipeline = healthcheck recon $server-server

[app:$server-server]
use = egg:swift#$server
log_requests = $LOG_REQUESTS

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:recon]
use = egg:swift#recon

EOF
            for d in $daemons; do
                echo "[$server-$d]"
                if [[ $d == updater ]]; then
                    printf 'log_name = %s-updater\ninterval = 30\nconcurrency = 1\n\n' "$server"
                fi
            done
        } | put_file "$ETC/$server-server.conf" 0640 root:swift
    done

    local s3=""; [[ $S3API == 1 ]] && s3="s3api "
    local access
    if [[ $ACCESS_LOG == 1 ]]; then
        access="access_log_udp_host = $HOST
access_log_udp_port = $ACCESS_LOG_PORT
access_log_facility = LOG_LOCAL1"
    else
        access="# access log off: its logger ignores log_address (UDP from 0.0.0.0), see $ME
access_log_level = WARNING"
    fi
    put_file "$ETC/proxy-server.conf" 0640 root:swift <<EOF
# written by $ME
[DEFAULT]
bind_ip = $HOST
bind_port = $PROXY_PORT
workers = $PROXY_WORKERS
user = swift
swift_dir = $ETC
log_name = proxy-server
log_address = $LOG_SOCK
log_level = INFO

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl ${s3}tempauth copy container-quotas account-quotas slo dlo versioned_writes symlink proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true

[filter:tempauth]
use = egg:swift#tempauth
user_chris_chris1234 = testing .admin
user_test_tester = testing .admin
user_test_tester2 = testing2 .admin
user_test_tester3 = testing3
user_test2_tester2 = testing2 .admin
user_admin_admin = admin .admin .reseller_admin

[filter:cache]
use = egg:swift#memcache
memcache_servers = $HOST:$MEMCACHED_PORT

[filter:proxy-logging]
use = egg:swift#proxy_logging
$access

[filter:s3api]
use = egg:swift#s3api

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:bulk]
use = egg:swift#bulk
[filter:tempurl]
use = egg:swift#tempurl
allowed_digests = sha256 sha512
[filter:copy]
use = egg:swift#copy
[filter:container-quotas]
use = egg:swift#container_quotas
[filter:account-quotas]
use = egg:swift#account_quotas
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
[filter:versioned_writes]
use = egg:swift#versioned_writes
allow_versioned_writes = true
[filter:symlink]
use = egg:swift#symlink
EOF

    local udp=""
    [[ $ACCESS_LOG == 1 ]] && udp="module(load=\"imudp\")
input(type=\"imudp\" address=\"$HOST\" port=\"$ACCESS_LOG_PORT\")"
    install -d -m 0700 "$RUN_DIR/rsyslog"
    put_file "$RUN_DIR/rsyslog.conf" 0644 root:root <<EOF
# written by $ME: private rsyslogd for Swift only (no /dev/log, no network)
global(workDirectory="$RUN_DIR/rsyslog")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="$LOG_SOCK" CreatePath="on" RateLimit.Interval="0")
$udp
template(name="SwiftLogFile" type="string" string="$LOG_DIR/%programname:::secpath-replace%.log")
template(name="SwiftLine" type="string" string="%timegenerated:::date-rfc3339% %syslogseverity-text% %msg:::drop-last-lf%\n")
*.* action(type="omfile" dynaFile="SwiftLogFile" template="SwiftLine" fileCreateMode="0640")
EOF
}

# ---------------------------------------------------------------- rings
build_rings() {
    local stamp=$ETC/.pfcon-swift-rings want
    want="pp=$PART_POWER replicas=1 ip=$HOST ports=$ACCOUNT_PORT,$CONTAINER_PORT,$OBJECT_PORT dev=d1"
    if [[ -s $ETC/account.ring.gz && -s $ETC/container.ring.gz && -s $ETC/object.ring.gz \
          && -f $stamp && $(<"$stamp") == "$want" ]]; then
        log "rings present ($want)"
        return 0
    fi
    log "building rings ($want)"
    local ring port pids=() p
    for ring in account:$ACCOUNT_PORT container:$CONTAINER_PORT object:$OBJECT_PORT; do
        port=${ring#*:}; ring=${ring%%:*}
        (
            cd "$ETC"
            rm -f "$ring.builder" "$ring.ring.gz"
            swift-ring-builder "$ring.builder" create "$PART_POWER" 1 1 >/dev/null
            swift-ring-builder "$ring.builder" add "r1z1-$HOST:$port/d1" 100 >/dev/null
            # exit 1 = "warnings" (e.g. a single device cannot be dispersed): fine here
            rc=0; swift-ring-builder "$ring.builder" rebalance >/dev/null 2>&1 || rc=$?
            ((rc <= 1)) || { echo "$ME: rebalance of $ring failed (exit $rc)" >&2; exit 1; }
            [[ -s $ring.ring.gz ]] || { echo "$ME: $ring.ring.gz not written" >&2; exit 1; }
            chmod 0644 "$ring.ring.gz"
        ) & pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || die "ring build failed"; done
    echo "$want" >"$stamp"
    log "rings built (at $(since))"
}

# ---------------------------------------------------------------- processes
config_hash() {
    {
        cat "$ETC"/{swift,account-server,container-server,object-server,proxy-server}.conf \
            "$RUN_DIR/rsyslog.conf" "$ETC"/{account,container,object}.ring.gz
        for p in "${PROCS[@]}"; do proc_cmd "$p"; done
    } | sha256sum | cut -d' ' -f1
}

launch() {
    local name=$1 cmd port
    cmd=$(proc_cmd "$name")
    port=$(proc_port "$name")
    if [[ -n $port ]] && port_busy "$port"; then
        die "port $HOST:$port (for $name) is already in use by a process this script did not start: $(ss -Htlnp "sport = :$port" | tr -s ' ' | cut -d' ' -f6-)"
    fi
    rm -f "$RUN_DIR/$name.pid"
    # setsid: own session/process group (Swift's parent kills its group on TERM);
    # the wrapper writes its PID, then exec's the program so the PID stays the same.
    # spawn_detached also closes our lock fd, which the servers must not hold.
    # shellcheck disable=SC2086,SC2016
    spawn_detached / "$LOG_DIR/$name.out" \
        "${CLEAN_ENV[@]}" /bin/bash -c 'echo $$ >"$0"; exec "$@"' "$RUN_DIR/$name.pid" $cmd
    # Until the wrapper has exec'd the program (its PID file is written just before the
    # exec, so a loaded machine can show the PID still running bash): up to 15 s.
    local i
    for ((i = 0; i < 300; i++)); do our_pid "$name" >/dev/null && break; sleep 0.05; done
    our_pid "$name" >/dev/null || { tail -5 "$LOG_DIR/$name.out" >&2 || true; die "$name did not start (see $LOG_DIR/$name.out)"; }
    log "started $name (pid $(<"$RUN_DIR/$name.pid"))"
}

wait_healthy() { # names...
    local deadline=$((SECONDS + START_TIMEOUT)) n pending
    while :; do
        pending=()
        for n in "$@"; do
            our_pid "$n" >/dev/null || { tail -20 "$LOG_DIR/$n.out" >&2 || true; die "$n exited (see $LOG_DIR/$n.out, $LOG_DIR/$n.log)"; }
            proc_healthy "$n" || pending+=("$n")
        done
        ((${#pending[@]} == 0)) && return 0
        ((SECONDS < deadline)) || die "not healthy after ${START_TIMEOUT}s: ${pending[*]} (see $LOG_DIR)"
        sleep 0.2
    done
}

start_procs() {
    local hash running=() missing=() n
    hash=$(config_hash)
    for n in "${PROCS[@]}"; do
        if our_pid "$n" >/dev/null; then running+=("$n"); else missing+=("$n"); fi
    done
    if ((${#running[@]} > 0)) && [[ ! -f $RUN_DIR/config.sha || $(<"$RUN_DIR/config.sha") != "$hash" ]]; then
        log "configuration changed: restarting"
        stop_procs
        missing=("${PROCS[@]}")
    fi
    if ((${#missing[@]} == 0)); then
        log "all processes already running"
    fi
    for n in "${missing[@]}"; do
        launch "$n"
        # the servers must find the log socket at startup, or they fall back to UDP syslog
        [[ $n == rsyslogd ]] && { wait_healthy rsyslogd; chmod 0666 "$LOG_SOCK"; }
    done
    echo "$hash" >"$RUN_DIR/config.sha"
    wait_healthy "${PROCS[@]}"
    log "healthy (at $(since)): proxy http://$HOST:$PROXY_PORT, account/container/object :$ACCOUNT_PORT/:$CONTAINER_PORT/:$OBJECT_PORT, memcached :$MEMCACHED_PORT"
}

stop_procs() {
    local n pid i alive
    local -a order=() pids=()
    for ((i = ${#PROCS[@]} - 1; i >= 0; i--)); do order+=("${PROCS[i]}"); done
    # Phase 1: Swift processes; phase 2: memcached and rsyslogd (so shutdown logs land).
    for phase in 1 2; do
        pids=()
        for n in "${order[@]}"; do
            case $n in rsyslogd|memcached) [[ $phase == 2 ]] || continue ;; *) [[ $phase == 1 ]] || continue ;; esac
            if pid=$(our_pid "$n"); then
                # Swift parents are their own process-group leaders (setsid): TERM the group
                # so the workers go too.
                if [[ $(ps -o pgid= -p "$pid" | tr -d ' ') == "$pid" ]]; then
                    kill -TERM -- "-$pid" 2>/dev/null || true
                else
                    kill -TERM "$pid" 2>/dev/null || true
                fi
                pids+=("$pid"); log "stopping $n (pid $pid)"
            fi
            rm -f "$RUN_DIR/$n.pid"
        done
        ((${#pids[@]} == 0)) && continue
        for ((i = 0; i < 50; i++)); do
            alive=0
            for pid in "${pids[@]}"; do still_running "$pid" && alive=1; done
            ((alive == 0)) && break
            sleep 0.1
        done
        if ((alive)); then
            for pid in "${pids[@]}"; do
                still_running "$pid" || continue
                kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
                log "killed pid $pid (did not exit within 5 s of TERM)"
            done
        fi
    done
    rm -f "$RUN_DIR/config.sha"
}

# ---------------------------------------------------------------- smoke test
smoke() {
    local hdr token url body want code
    hdr=$(curl -fsS -m 10 -o /dev/null -D - -H "X-Auth-User: $PFCON_USER" -H "X-Auth-Key: $PFCON_KEY" "$AUTH_URL") \
        || die "smoke: auth v1 as $PFCON_USER failed"
    token=$(printf '%s\n' "$hdr" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-auth-token"{print $2}')
    url=$(printf '%s\n' "$hdr" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-storage-url"{print $2}')
    [[ -n $token && -n $url ]] || die "smoke: no token/storage URL in auth response"
    sc() { curl -sS -m 10 -o /dev/null -w '%{http_code}' -H "X-Auth-Token: $token" "$@"; }
    expect() { local got=$1 what=$2; shift 2; [[ " $* " == *" $got "* ]] || die "smoke: $what returned HTTP $got"; }
    expect "$(sc -X PUT "$url/$PFCON_CONTAINER")" "PUT container $PFCON_CONTAINER" 201 202
    expect "$(sc -X PUT "$url/$SMOKE_CONTAINER")" "PUT container $SMOKE_CONTAINER" 201 202
    want="swift-aio smoke $$ $(date +%s%N)"
    expect "$(sc -X PUT -H 'Content-Type: text/plain' --data-binary "$want" "$url/$SMOKE_CONTAINER/probe.txt")" "PUT object" 201
    body=$(curl -fsS -m 10 -H "X-Auth-Token: $token" "$url/$SMOKE_CONTAINER/probe.txt") || die "smoke: GET object failed"
    [[ $body == "$want" ]] || die "smoke: GET returned different content"
    expect "$(sc -X DELETE "$url/$SMOKE_CONTAINER/probe.txt")" "DELETE object" 204
    code=$(sc "$url/$SMOKE_CONTAINER/probe.txt"); expect "$code" "GET deleted object" 404
    expect "$(sc -X DELETE "$url/$SMOKE_CONTAINER")" "DELETE container" 204 404 409
    code=$(curl -sS -m 10 -o /dev/null -w '%{http_code}' -H 'X-Auth-User: test:tester' -H 'X-Auth-Key: testing' "$AUTH_URL")
    expect "$code" "auth as test:tester" 200
    log "smoke OK: auth v1, container '$PFCON_CONTAINER' present, PUT/GET/DELETE object ($url)"
}

# ---------------------------------------------------------------- commands
cmd_start() {
    need_root
    install -d -m 0755 "$RUN_DIR" "$LOG_DIR"
    lock
    install_pkgs
    write_config
    build_rings
    start_procs
    smoke
    log "ready in $(since): eval \"\$(bash $0 env)\""
}

cmd_stop() {
    need_root
    lock
    stop_procs
    log "stopped"
}

cmd_status() {
    local n pid up=0 total=${#PROCS[@]} state
    for n in "${PROCS[@]}"; do
        if pid=$(our_pid "$n"); then
            if proc_healthy "$n"; then state=healthy; up=$((up + 1)); else state=unhealthy; fi
            [[ $n == *-updater && $state == healthy ]] && state=running
            printf '%s: %-18s pid %-7s %s\n' "$ME" "$n" "$pid" "$state"
        else
            printf '%s: %-18s %-11s stopped\n' "$ME" "$n" ""
        fi
    done
    if ((up == total)); then
        log "running: $AUTH_URL (data $SWIFT_DATA, logs $LOG_DIR)"; return 0
    elif ((up == 0)); then
        log "not running"; return 3
    fi
    log "degraded: $up/$total healthy"; return 1
}

cmd_reset() {
    need_root
    lock
    stop_procs
    case $SWIFT_DATA in /|/srv|/var|/tmp|/home|/root|"") die "refusing to wipe SWIFT_DATA=$SWIFT_DATA" ;; esac
    log "wiping $DEVICES, $RECON and the rings"
    rm -rf -- "$DEVICES" "$RECON"
    rm -f "$ETC"/{account,container,object}.{builder,ring.gz} "$ETC/.pfcon-swift-rings"
    release_lock
    cmd_start
}

cmd_env() {
    cat <<EOF
export SWIFT_AUTH_URL=$AUTH_URL
export SWIFT_USERNAME=$PFCON_USER
export SWIFT_KEY=$PFCON_KEY
export SWIFT_CONTAINER_NAME=$PFCON_CONTAINER
export ST_AUTH=$AUTH_URL
export ST_USER=$PFCON_USER
export ST_KEY=$PFCON_KEY
EOF
}

case ${1:-start} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    reset) cmd_reset ;;
    env) cmd_env ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
esac
