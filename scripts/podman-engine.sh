#!/usr/bin/env bash
# Start, stop or query a local Podman service (Docker-compatible API) for
# pfcon's tests and CI (CONTAINER_ENV=podman).
#
# Usage: scripts/podman-engine.sh [start|stop|status|env]   (default: start)
#
#   start   Install Debian's podman (4.3.1), netavark, busybox-static and curl
#           if missing (waiting up to 300 s for another apt/dpkg to finish),
#           without letting maintainer scripts start any daemon; make sure
#           /etc/containers/containers.conf has the settings this sandbox
#           needs (below); start
#             podman system service --time=0 unix:///run/pfcon-podman/podman.sock
#           detached, wait (at most 60 s) until GET /_ping answers, then
#           import the test image local/pfcon-busybox:1 into Podman's own
#           store if it is missing, and smoke-test it through the API.
#           Idempotent; a service started by this script is restarted if the
#           config had to change. Prints timings at the end.
#   stop    Stop the service this script started (PID file), and only that.
#   status  Say whether the socket answers, and the service's version.
#   env     Print `export PFCON_PODMAN_HOST=unix:///run/pfcon-podman/podman.sock`
#           (use: eval "$(scripts/podman-engine.sh env)").
#
# containers.conf (merged into an existing file; other keys are kept):
#   [containers] default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
#       Out of the box every container fails with "error setting rlimits ...
#       operation not permitted": this sandbox cannot raise RLIMIT_NOFILE /
#       RLIMIT_NPROC to Podman's defaults.
#   [engine] cgroup_manager = "cgroupfs", events_logger = "file"
#       Only if the file does not set them and the host runs no systemd.
#
# Podman's networking is left at its defaults; this script writes no CNI or
# netavark configuration and does not touch the Docker engine. (The default
# "podman" network works here: netavark adds its NETAVARK_* iptables chains
# the first time a container uses it, and a podman0 bridge, 10.88.0.0/16,
# while such containers run. Jobs can use --network none instead.)
#
# Files: log /var/log/pfcon-ci/podman.log, PID file /run/pfcon-podman/podman.pid.
set -euo pipefail

ME=podman-engine.sh
RUN_DIR=/run/pfcon-podman
SOCK=$RUN_DIR/podman.sock
HOST_URL=unix://$SOCK
PID_FILE=$RUN_DIR/podman.pid
LOCK_FILE=$RUN_DIR/podman-engine.lock  # serialises concurrent start/stop
LOG_FILE=/var/log/pfcon-ci/podman.log
CONF=/etc/containers/containers.conf
CONF_MARKER="# Written by pfcon's scripts/podman-engine.sh."  # no backup of a file we wrote
ULIMITS=("nofile=1024:1024" "nproc=4096:4096")
START_TIMEOUT=60
STOP_TIMEOUT=30

LOG_FD=2  # stdout is for `env` and for ensure_conf's answer
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib/common.sh"
IMAGE=$BUSYBOX_IMAGE

# Timings, printed by `start` at the end.
TIMINGS=()

our_pid() {  # the PID of the service this script started, if it is alive
    live_pid_from_file "$PID_FILE" podman
}

ping_ok() {
    [[ -S "$SOCK" ]] || return 1
    [[ "$(curl -sS --max-time 5 --unix-socket "$SOCK" http://d/_ping 2>/dev/null)" == OK ]]
}
server_version() {
    curl -sS --max-time 5 --unix-socket "$SOCK" http://d/version 2>/dev/null |
        sed -n 's/.*"Version":"\([^"]*\)".*"ApiVersion":"\([^"]*\)".*/\1 (API \2)/p' | head -n1
}

# ---------------------------------------------------------------- packages --

install_packages() {
    # netavark is named so that apt does not pick CNI plugins for podman's
    # "container-network-stack" dependency; Podman 4 prefers netavark anyway.
    local pkgs=(podman netavark busybox-static curl) t0
    t0=$(now)
    ensure_packages "${pkgs[@]}"
    if ((${#MISSING_PKGS[@]})); then
        TIMINGS+=("install ${MISSING_PKGS[*]}: $(elapsed "$t0")s")
    else
        log "packages already installed: ${pkgs[*]}"
    fi
}

# ---------------------------------------------------------- containers.conf --

host_has_systemd() { [[ -d /run/systemd/system ]]; }

# Merge our settings into $CONF. Prints "changed" if the file was rewritten.
# Line-based, which is enough for containers.conf: within [containers] the
# default_ulimits array (one or several lines) keeps its other entries and
# gets ours for nofile/nproc; keys under [engine] are only added if absent.
ensure_conf() {
    mkdir -p "$(dirname "$CONF")"
    local engine_keys=""
    if ! host_has_systemd; then
        engine_keys='cgroup_manager = "cgroupfs"|events_logger = "file"'
    fi
    local ours
    ours=$(printf '"%s", ' "${ULIMITS[@]}")
    ours=${ours%, }
    local new
    new=$(mktemp)
    if [[ ! -s "$CONF" ]]; then
        {
            echo "$CONF_MARKER"
            echo "[containers]"
            echo "# This sandbox cannot raise RLIMIT_NOFILE/RLIMIT_NPROC to Podman's defaults."
            echo "default_ulimits = [$ours]"
            if [[ -n "$engine_keys" ]]; then
                echo
                echo "[engine]"
                echo "# No systemd on this host."
                tr '|' '\n' <<<"$engine_keys"
            fi
        } >"$new"
    else
        awk -v ours="$ours" -v engine_keys="$engine_keys" '
            function flush_section(   i, n, kv, k) {
                if (section == "containers" && !done_ulimits) {
                    print "default_ulimits = [" ours "]"; done_ulimits = 1
                }
                if (section == "engine" && engine_keys != "") {
                    n = split(engine_keys, kv, "|")
                    for (i = 1; i <= n; i++) {
                        k = kv[i]; sub(/[ \t]*=.*/, "", k)
                        if (!(k in engine_seen)) print kv[i]
                        engine_seen[k] = 1
                    }
                    done_engine = 1
                }
            }
            # merged array: existing entries other than nofile/nproc, then ours
            function merged(text,   res, s, m) {
                res = ""
                s = text
                while (match(s, /"[^"]*"/)) {
                    m = substr(s, RSTART, RLENGTH)
                    s = substr(s, RSTART + RLENGTH)
                    if (m ~ /^"(nofile|nproc)=/) continue
                    res = res m ", "
                }
                return "[" res ours "]"
            }
            # blank lines and comments are held back, so that keys added at the
            # end of a section go before those that precede the next header
            function out(line) { if (held != "") { printf "%s", held; held = "" } print line }
            /^[ \t]*(#.*)?$/ && !in_array { held = held $0 "\n"; next }
            in_array {
                buf = buf "\n" $0
                if ($0 ~ /\]/) { out("default_ulimits = " merged(buf)); in_array = 0 }
                next
            }
            /^[ \t]*\[\[?[^]]*\]\]?[ \t]*(#.*)?$/ {
                flush_section()
                section = $0; gsub(/^[ \t]*\[\[?|\]\]?[ \t]*(#.*)?$/, "", section); gsub(/[ \t]/, "", section)
                if (section == "containers") seen_containers = 1
                if (section == "engine") seen_engine = 1
                out($0); next
            }
            section == "containers" && /^[ \t]*default_ulimits[ \t]*=/ {
                done_ulimits = 1
                if ($0 ~ /\]/) { out("default_ulimits = " merged($0)) }
                else { in_array = 1; buf = $0 }
                next
            }
            section == "engine" && /^[ \t]*[A-Za-z_]+[ \t]*=/ {
                k = $0; sub(/^[ \t]*/, "", k); sub(/[ \t]*=.*/, "", k); engine_seen[k] = 1
            }
            { out($0) }
            END {
                flush_section()
                printf "%s", held
                if (!seen_containers) { print ""; print "[containers]"; print "default_ulimits = [" ours "]" }
                if (!seen_engine && engine_keys != "") {
                    print ""; print "[engine]"; n = split(engine_keys, kv, "|"); for (i = 1; i <= n; i++) print kv[i]
                }
            }
        ' "$CONF" >"$new"
    fi
    if ! host_has_systemd && grep -qE '^[[:space:]]*cgroup_manager[[:space:]]*=[[:space:]]*"systemd"' "$new"; then
        log "WARNING: $CONF sets cgroup_manager = \"systemd\" but this host runs no systemd; containers may fail"
    fi
    if [[ -f "$CONF" ]] && cmp -s "$new" "$CONF"; then
        rm -f "$new"
        return 0
    fi
    if [[ -s "$CONF" && ! -e "$CONF.pfcon-orig" ]] && ! grep -qF "$CONF_MARKER" "$CONF"; then
        cp -p "$CONF" "$CONF.pfcon-orig"
        log "kept the original $CONF as $CONF.pfcon-orig"
    fi
    chmod 644 "$new"
    mv "$new" "$CONF"
    log "wrote $CONF"
    echo changed
}

# ------------------------------------------------------------------- start --

start_service() {
    mkdir -p "$RUN_DIR" "$(dirname "$LOG_FILE")"
    rm -f "$PID_FILE"
    [[ -S "$SOCK" ]] && rm -f "$SOCK"  # only reached when nothing answers on it
    log "starting podman system service on $HOST_URL (log: $LOG_FILE)"
    echo "---- $(date -u +%FT%TZ) $ME start" >>"$LOG_FILE"
    local t0 pid
    t0=$(now)
    # Detached and without our fds: the service must not inherit (and so hold)
    # our lock. Run it from $RUN_DIR: conmon 2.1 drops an "oom" file into its
    # working directory whenever a container is OOM-killed (containers/conmon#504).
    spawn_detached "$RUN_DIR" "$LOG_FILE" nohup podman system service --time=0 "$HOST_URL"
    pid=$SPAWNED_PID
    echo "$pid" >"$PID_FILE"
    wait_until_ready "$pid" "podman service" "$START_TIMEOUT" "$LOG_FILE" ping_ok
    pid_is "$pid" podman || die "pid $pid answering on $SOCK is not podman (comm: $(cat "/proc/$pid/comm" 2>/dev/null))"
    TIMINGS+=("service ready: $(elapsed "$t0")s")
    log "service ready: podman $(server_version), pid $pid"
}

stop_service() {  # $1: PID
    stop_pid "$1" podman "podman service" "$STOP_TIMEOUT"
    rm -f "$PID_FILE"
}

ensure_image() {
    if podman image exists "$IMAGE"; then
        log "image $IMAGE already in Podman's store"
        return 0
    fi
    local t0
    t0=$(now)
    import_busybox_image podman "$IMAGE"
    TIMINGS+=("import $IMAGE: $(elapsed "$t0")s")
    log "imported $IMAGE (busybox-static $BUSYBOX_VERSION, $BUSYBOX_APPLETS applet symlinks)"
}

# Run a container through the service's Docker-compatible API (what pfcon
# does), with Podman's default networking: proves the rlimit fix and that the
# image resolves by the name the tests use.
smoke_test() {
    local t0 name out id
    t0=$(now)
    name=pfcon-podman-smoke-$$
    api() { curl -sS --max-time 30 --unix-socket "$SOCK" -H 'Content-Type: application/json' "$@"; }
    api -X DELETE "http://d/containers/$name?force=true" >/dev/null 2>&1 || true
    out=$(api -X POST "http://d/containers/create?name=$name" \
        -d "{\"Image\":\"$IMAGE\",\"Cmd\":[\"sh\",\"-c\",\"echo hi\"]}")
    id=$(sed -n 's/.*"Id":"\([0-9a-f]*\)".*/\1/p' <<<"$out")
    [[ -n "$id" ]] || die "smoke test: creating a container failed: $out"
    local body code
    body=$(mktemp)
    code=$(api -X POST "http://d/containers/$id/start" -o "$body" -w '%{http_code}' || true)
    out=$(cat "$body"); rm -f "$body"
    if [[ "$code" != 204 ]]; then
        api -X DELETE "http://d/containers/$id?force=true" >/dev/null 2>&1 || true
        die "smoke test: starting a container failed (HTTP $code): $out"
    fi
    api -X POST "http://d/containers/$id/wait" >/dev/null
    out=$(api "http://d/containers/$id/logs?stdout=true&stderr=true" | tr -d '\000-\010\016-\037')
    api -X DELETE "http://d/containers/$id?force=true" >/dev/null 2>&1 || true
    [[ "$out" == *hi* ]] || die "smoke test: expected 'hi' in the logs, got '$out'"
    TIMINGS+=("smoke test (create/start/wait/logs/rm): $(elapsed "$t0")s")
    log "smoke test passed: sh -c 'echo hi' via the API -> hi"
}

cmd_start() {
    ((EUID == 0)) || die "starting the podman service needs root"
    local t_all
    t_all=$(now)
    take_lock "$LOCK_FILE"
    install_packages
    command -v podman >/dev/null || die "podman is not on PATH after installing it"
    local changed pid
    changed=$(ensure_conf)
    pid=$(our_pid || true)
    if ping_ok; then
        if [[ -n "$changed" ]]; then
            if [[ -n "$pid" ]]; then
                log "$CONF changed: restarting the service"
                stop_service "$pid"
                start_service
            else
                log "WARNING: $CONF changed but the service on $SOCK was not started by this script; restart it yourself"
            fi
        else
            log "service already answering on $HOST_URL: podman $(server_version)${pid:+, pid $pid}"
        fi
    else
        if [[ -n "$pid" ]]; then  # ours, alive but not answering: replace it
            log "podman service (pid $pid) does not answer; restarting it"
            stop_service "$pid"
        fi
        start_service
    fi
    ensure_image
    smoke_test
    log "timings: ${TIMINGS[*]:-none}; total $(elapsed "$t_all")s"
    log "use: eval \"\$($0 env)\"   # PFCON_PODMAN_HOST=$HOST_URL"
}

# -------------------------------------------------------------- stop/status --

cmd_stop() {
    stop_daemon_from_pid_file "$PID_FILE" podman "podman service" "$STOP_TIMEOUT" "$LOCK_FILE"
}

cmd_status() {
    if ping_ok; then
        local pid owner="not started by this script"
        pid=$(our_pid || true)
        [[ -n "$pid" ]] && owner="started by this script, pid $pid"
        log "service answering on $HOST_URL: podman $(server_version); $owner"
    else
        log "service NOT answering on $HOST_URL"
        return 1
    fi
}

case "${1:-start}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) echo "export PFCON_PODMAN_HOST=$HOST_URL" ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" ;;
    *) die "unknown subcommand '$1' (use start, stop, status or env)" ;;
esac
