#!/usr/bin/env bash
# Build (only if missing) and smoke-test the local images pfcon's tests use.
# No container registry is needed: images are made from Debian packages.
#
# Usage: scripts/test-images.sh [--busybox-only]
#
#   local/pfcon-busybox:1        busybox-static + one symlink per applet,
#                                empty /tmp (1777) and /share
#   local/pl-simpledsapp:1.0.3   Debian bookworm (debootstrap minbase) with
#                                python3 and the ChRIS plugin simpledsapp 1.0.3
#                                (chrisapp 1.0.9); run it as
#                                  simpledsapp.py --prefix lo /share/incoming /share/outgoing
#                                (skipped with --busybox-only)
#
# It first runs docker-engine.sh start. The debootstrap root filesystem is
# cached in /var/cache/pfcon-ci/ (delete it to force a fresh one).
set -euo pipefail

ME=test-images.sh
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

PLUGIN_IMAGE=local/pl-simpledsapp:1.0.3
PLUGIN_PIP_REQS=(simpledsapp==1.0.3 chrisapp==1.0.9)  # newer chrisapp breaks simpledsapp 1.0.3
PLUGIN_EXEC_NAMES=(simpledsapp.py simpledsapp)      # what pip may have installed in /usr/local/bin
SUITE=bookworm
DEBOOTSTRAP_INCLUDE=python3,python3-pip,python3-venv
CACHE_DIR=/var/cache/pfcon-ci
ROOTFS_CACHE=$CACHE_DIR/rootfs-$SUITE-minbase-${DEBOOTSTRAP_INCLUDE//,/-}.tar

# shellcheck source=lib/common.sh source-path=SCRIPTDIR
. "$SCRIPT_DIR/lib/common.sh"

# Timings: `step_begin NAME` ... `step_end`; a summary is printed at the end.
TIMINGS=()
STEP_NAME="" STEP_T0=0
step_begin() { STEP_NAME=$1; STEP_T0=$(now); log "== $1"; }
step_end() {
    local dt
    dt=$(elapsed "$STEP_T0")
    TIMINGS+=("$(printf '%-48s %7ss' "$STEP_NAME" "$dt")")
    log "   done in ${dt}s"
}

# Scratch space, removed on exit (it is created here, not in a $(...) subshell,
# so the exit hook sees it).
WORK_DIR=$(mktemp -d /var/tmp/pfcon-ci-test-images.XXXXXX)
at_exit rm -rf "$WORK_DIR"
make_tmp_dir() { mktemp -d "$WORK_DIR/$1.XXXXXX"; }

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# ----------------------------------------------------------------- busybox --

build_busybox_image() {
    import_busybox_image docker "$BUSYBOX_IMAGE"
    log "rootfs: busybox-static $BUSYBOX_VERSION, $BUSYBOX_APPLETS applet symlinks"
}

verify_busybox_image() {
    local out
    out=$(docker run --rm --network none "$BUSYBOX_IMAGE" sh -c 'echo hi')
    [[ "$out" == hi ]] || die "$BUSYBOX_IMAGE printed '$out' instead of 'hi'"
    log "$BUSYBOX_IMAGE: sh -c 'echo hi' -> $out"
}

# ------------------------------------------------------------------ plugin --

# The mirror this machine's apt already uses (debootstrap needs the main archive).
apt_mirror() {
    local uri=""
    if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
        uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
            /etc/apt/sources.list.d/debian.sources)
    fi
    if [[ -z "$uri" && -f /etc/apt/sources.list ]]; then
        uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit } }' \
            /etc/apt/sources.list)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

# Root filesystem from debootstrap, cached as a tarball. Extracts it into $1.
make_rootfs() {
    local root=$1
    if [[ ! -f "$ROOTFS_CACHE" ]]; then
        ensure_packages debootstrap
        local mirror staging
        mirror=$(apt_mirror)
        staging=$(make_tmp_dir debootstrap)
        log "debootstrap $SUITE (minbase + $DEBOOTSTRAP_INCLUDE) from $mirror"
        debootstrap --variant=minbase --include="$DEBOOTSTRAP_INCLUDE" "$SUITE" "$staging" "$mirror" \
            >"$WORK_DIR/debootstrap.log" 2>&1 || {
            tail -n 30 "$WORK_DIR/debootstrap.log" >&2
            die "debootstrap failed (see above)"
        }
        # Trim what an image does not need.
        rm -rf "$staging"/var/cache/apt/archives/*.deb "$staging"/var/lib/apt/lists/* "$staging"/var/log/*.log
        # debootstrap copied these from the host; Docker provides its own at run time.
        : >"$staging/etc/resolv.conf"
        echo localhost >"$staging/etc/hostname"
        mkdir -p "$CACHE_DIR"
        chmod 0755 "$staging"  # mktemp -d made it 0700: the image root must be traversable
        tar --numeric-owner -C "$staging" -cf "$ROOTFS_CACHE.partial.$$" .
        mv "$ROOTFS_CACHE.partial.$$" "$ROOTFS_CACHE"
        log "cached root filesystem: $ROOTFS_CACHE ($(du -h "$ROOTFS_CACHE" | cut -f1))"
    else
        log "using cached root filesystem $ROOTFS_CACHE"
    fi
    tar --numeric-owner -C "$root" -xpf "$ROOTFS_CACHE"
}

# pip settings of this host that the chroot's pip must share: the index URLs
# (http/https only: local file:// indexes and paths do not exist in the chroot)
# and trusted hosts. Prints NAME=VALUE lines for env(1).
host_pip_env() {
    local conf key value urls
    conf=$( (python3 -m pip config list 2>/dev/null || true) )
    for key in index-url extra-index-url trusted-host; do
        # `pip config list` lines look like: global.index-url='https://…'
        value=$(sed -n "s/^[^.]*\.$key='\(.*\)'\$/\1/p" <<<"$conf" | tr ' ' '\n' | awk 'NF && !seen[$0]++')
        [[ -n "$value" ]] || continue
        if [[ "$key" == trusted-host ]]; then
            urls=$value
        else
            urls=$(grep -E '^https?://' <<<"$value" || true)
            grep -vE '^https?://' <<<"$value" | sed "s|^|[$ME] pip: not passing local $key to the chroot: |" >&2 || true
        fi
        [[ -n "$urls" ]] || continue
        echo "PIP_$(tr 'a-z-' 'A-Z_' <<<"$key")=$(tr '\n' ' ' <<<"$urls" | sed 's/ $//')"
    done
}

build_plugin_image() {
    local root exec_path="" name
    root=$(make_tmp_dir plugin)
    step_begin "plugin: root filesystem (debootstrap or cache)"
    make_rootfs "$root"
    step_end

    step_begin "plugin: pip install ${PLUGIN_PIP_REQS[*]}"
    # TLS to the package index may be intercepted by a CA only the host
    # trusts: lend the host's bundle (and DNS config) to pip for the build.
    local ca=/etc/ssl/certs/ca-certificates.crt
    [[ -f "$ca" ]] || ensure_packages ca-certificates
    cp "$ca" "$root/tmp/host-ca.crt"
    cp -a "$root/etc/resolv.conf" "$root/tmp/resolv.conf.orig" 2>/dev/null || true
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    local pip_env=()
    mapfile -t pip_env < <(host_pip_env)
    ((${#pip_env[@]} == 0)) || log "pip settings from the host: ${pip_env[*]}"
    env -i PATH="$IMAGE_PATH" HOME=/root LANG=C.UTF-8 \
        PIP_CERT=/tmp/host-ca.crt PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
        PIP_ROOT_USER_ACTION=ignore PIP_DEFAULT_TIMEOUT=180 \
        ${http_proxy:+http_proxy=$http_proxy} ${https_proxy:+https_proxy=$https_proxy} \
        ${no_proxy:+no_proxy=$no_proxy} "${pip_env[@]}" \
        "$(command -v chroot)" "$root" \
        python3 -m pip install --break-system-packages --progress-bar off "${PLUGIN_PIP_REQS[@]}"
    rm -f "$root/tmp/host-ca.crt"
    if [[ -f "$root/tmp/resolv.conf.orig" ]]; then
        mv "$root/tmp/resolv.conf.orig" "$root/etc/resolv.conf"
    else
        rm -f "$root/etc/resolv.conf"
    fi
    rm -rf "$root/root/.cache"
    for name in "${PLUGIN_EXEC_NAMES[@]}"; do
        if [[ -f "$root/usr/local/bin/$name" ]]; then exec_path=/usr/local/bin/$name; break; fi
    done
    [[ -n "$exec_path" ]] || die "pip installed no ${PLUGIN_EXEC_NAMES[*]} in /usr/local/bin"
    step_end

    step_begin "plugin: docker import"
    tar --numeric-owner -C "$root" -c . |
        docker import --change "ENV PATH=$IMAGE_PATH" --change 'ENV LANG=C.UTF-8' \
            --change 'WORKDIR /' --change "LABEL org.chrisproject.pfcon-ci.exec=$exec_path" \
            --message "pfcon CI: $SUITE + ${PLUGIN_PIP_REQS[*]}" - "$PLUGIN_IMAGE" >/dev/null
    step_end
}

plugin_exec_path() {
    docker image inspect --format '{{ index .Config.Labels "org.chrisproject.pfcon-ci.exec" }}' "$PLUGIN_IMAGE"
}

# Run the plugin the way pfcon does (input read-only, output writable, no
# network) and check it copied the input with the prefix.
verify_plugin_image() {
    local exec_path dir out
    exec_path=$(plugin_exec_path)
    [[ -n "$exec_path" && "$exec_path" != "<no value>" ]] || die "$PLUGIN_IMAGE lacks its exec label; remove it and rerun"
    dir=$(make_tmp_dir verify)
    mkdir -p "$dir/in/sub" "$dir/out"
    echo "pfcon ci $(date +%s)" >"$dir/in/data.txt"
    echo "nested" >"$dir/in/sub/more.txt"
    docker run --rm --network none \
        -v "$dir/in:/share/incoming:ro" -v "$dir/out:/share/outgoing:rw" \
        "$PLUGIN_IMAGE" "$exec_path" --prefix lo /share/incoming /share/outgoing >"$dir/run.log" 2>&1 ||
        { cat "$dir/run.log" >&2; die "$PLUGIN_IMAGE: $exec_path failed"; }
    out=$(cd "$dir/out" && find . -type f | sort | tr '\n' ' ')
    cmp -s "$dir/in/data.txt" "$dir/out/lodata.txt" ||
        { cat "$dir/run.log" >&2; die "$PLUGIN_IMAGE: expected lodata.txt in the output, got: $out"; }
    log "$PLUGIN_IMAGE: $exec_path --prefix lo /share/incoming /share/outgoing -> output files: $out"
}

# -------------------------------------------------------------------- main --

BUSYBOX_ONLY=0
for arg in "$@"; do
    case "$arg" in
        --busybox-only) BUSYBOX_ONLY=1 ;;
        -h | --help) sed -n '2,17s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) die "unknown argument '$arg' (usage: $ME [--busybox-only])" ;;
    esac
done

T_START=$(now)
step_begin "docker engine (docker-engine.sh start)"
bash "$SCRIPT_DIR/docker-engine.sh" start
step_end

# Concurrent runs build one at a time; the later ones then find the images.
take_lock /run/pfcon-ci/test-images.lock 900

if image_exists "$BUSYBOX_IMAGE"; then
    log "$BUSYBOX_IMAGE already present"
else
    step_begin "busybox: build + import $BUSYBOX_IMAGE"
    build_busybox_image
    step_end
fi
step_begin "busybox: verify"
verify_busybox_image
step_end

if ((!BUSYBOX_ONLY)); then
    if image_exists "$PLUGIN_IMAGE"; then
        log "$PLUGIN_IMAGE already present"
    else
        build_plugin_image
    fi
    step_begin "plugin: verify"
    verify_plugin_image
    step_end
fi

log "timings:"
for t in "${TIMINGS[@]}"; do log "  $t"; done
log "total $(elapsed "$T_START")s"
log "images ready: $BUSYBOX_IMAGE$( ((BUSYBOX_ONLY)) || echo " $PLUGIN_IMAGE")"
((BUSYBOX_ONLY)) || log "plugin command: $(plugin_exec_path) (e.g. docker run --rm --network none -v IN:/share/incoming:ro -v OUT:/share/outgoing $PLUGIN_IMAGE $(plugin_exec_path) --prefix lo /share/incoming /share/outgoing)"
