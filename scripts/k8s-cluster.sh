#!/usr/bin/env bash
# k8s-cluster.sh - a real single-node Kubernetes v1.20.2 on this machine, for
# pfcon's Kubernetes compute tests and CI. No registry is needed: everything is
# built from Debian's source package `kubernetes` (1.20.5+really1.20.2, the
# full upstream v1.20.2 tree with vendor/) with Debian's Go, and the images the
# kubelet runs are imported locally.
#
# Usage:
#   bash scripts/k8s-cluster.sh [start]   install what is missing, build the
#                        binaries if not cached, create PKI/tokens/kubeconfigs,
#                        start etcd, kube-apiserver, kube-controller-manager,
#                        kube-scheduler and the kubelet (dockershim, on the
#                        engine of docker-engine.sh), wait for node Ready and
#                        the default ServiceAccount, run a smoke Job. When the
#                        cluster already runs, only checks its health.
#   bash scripts/k8s-cluster.sh stop      stop the processes this script started
#                        (PID files) and remove the kubelet's k8s_* containers
#   bash scripts/k8s-cluster.sh status    per-process state, health, node (exit 0 = all up)
#   bash scripts/k8s-cluster.sh reset     stop, wipe the cluster state, start
#   bash scripts/k8s-cluster.sh build     only install + build the binaries (cached)
#   bash scripts/k8s-cluster.sh pvc NAME HOSTPATH [NAMESPACE]
#                        (idempotently) a static hostPath PersistentVolume
#                        (ReadWriteMany, 10Gi, no StorageClass) bound to the
#                        PVC NAME in NAMESPACE (default "default"); HOSTPATH is
#                        created if missing
#   eval "$(bash scripts/k8s-cluster.sh env)"   KUBECONFIG, and PATH with kubectl 1.20.2
#
# The cluster: node "127.0.0.1" (the kubelet cannot publish a loopback node IP,
# so the node is named after it), everything bound to 127.0.0.1: etcd :2379
# (:2380 peer, :2381 metrics), kube-apiserver https://127.0.0.1:6443 (token
# auth, Node,RBAC), controller-manager :10257, scheduler :10259, kubelet
# :10250 (:10248 healthz). No pod network: pods get a loopback-only network
# namespace; a pod that must reach a service on the host uses hostNetwork.
# No registry: use local images with imagePullPolicy Never (or IfNotPresent).
#
# Files: binaries (cached between runs) $K8S_CACHE_DIR/bin
#   (default /var/cache/pfcon-ci/k8s-1.20.2; delete it to force a rebuild),
#   state $K8S_STATE_DIR (default /var/lib/pfcon-k8s): admin.kubeconfig, pki/,
#   etcd/, kubelet/, logs in log/<component>.log, PIDs in run/<component>.pid.
# Knobs (environment): K8S_STATE_DIR, K8S_CACHE_DIR, K8S_BUILD_JOBS (parallel
#   Go compiles; default from cores and free memory), K8S_SMOKE (1: run the
#   smoke Job after a start), K8S_START_TIMEOUT (per component, 90 s).
set -euo pipefail

ME=k8s-cluster.sh
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib/common.sh source-path=SCRIPTDIR
. "$SCRIPT_DIR/lib/common.sh"
T0=$(now)

# ----------------------------------------------------------------- settings --

K8S_VERSION=v1.20.2
K8S_GIT_COMMIT=faecb196815e248d3ecfb03c680a4507229c2a56  # the v1.20.2 tag (hack/lib/version.sh of the tarball)
PAUSE_VERSION=3.4                                        # build/pause/Makefile TAG
STATE=${K8S_STATE_DIR:-/var/lib/pfcon-k8s}
CACHE=${K8S_CACHE_DIR:-/var/cache/pfcon-ci/k8s-1.20.2}
SMOKE=${K8S_SMOKE:-1}
START_TIMEOUT=${K8S_START_TIMEOUT:-90}

BIN=$CACHE/bin
DEBSRC=$CACHE/debsrc
GOPATH_DIR=$CACHE/gopath
TREE=$GOPATH_DIR/src/k8s.io/kubernetes
GOCACHE_DIR=$CACHE/go-build
BUILD_INFO=$BIN/BUILD-INFO
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
# Changing how the binaries are made changes this, which invalidates the cache.
BUILD_RECIPE="k8s $K8S_VERSION from debsrc; debian patches; reflect2 1.0.2; oom-adj 0 (sandbox, guaranteed, docker); gen_openapi; GOPATH CGO_ENABLED=0; pause $PAUSE_VERSION static"

PKI=$STATE/pki
LOG_DIR=$STATE/log
RUN_DIR=$STATE/run
ETCD_DATA=$STATE/etcd
KUBELET_DIR=$STATE/kubelet
CNI_CONF_DIR=$STATE/cni/net.d
CNI_CACHE_DIR=$STATE/cni/cache
TOKENS=$STATE/tokens.csv
ADMIN_KUBECONFIG=$STATE/admin.kubeconfig
LOCK_FILE=/run/pfcon-ci/k8s-cluster.lock

HOST=127.0.0.1
NODE_NAME=127.0.0.1
APISERVER_PORT=6443
APISERVER_URL=https://$HOST:$APISERVER_PORT
SERVICE_CIDR=10.0.0.0/24
SERVICE_IP=10.0.0.1  # first address of SERVICE_CIDR: the `kubernetes` Service
SA_ISSUER=https://kubernetes.default.svc.cluster.local
CNI_BIN_DIR=/usr/lib/cni
DOCKER_SOCK=/var/run/docker.sock
export DOCKER_HOST=unix://$DOCKER_SOCK  # the engine of docker-engine.sh, which the kubelet uses

PAUSE_IMAGE=local/k8s-pause:$PAUSE_VERSION
SMOKE_JOB=pfcon-k8s-smoke
PV_CAPACITY=10Gi

# start order; stop goes in reverse
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet)
RUNTIME_PKGS=(etcd-server containernetworking-plugins openssl curl util-linux iproute2 busybox-static)
BUILD_PKGS=(golang-go golang-github-modern-go-reflect2-dev make rsync gcc libc6-dev patch xz-utils)

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

# ------------------------------------------------------------------ helpers --

# Progress: `phase NAME` ... `phase_done`; lines carry the time since the script started.
TIMINGS=()
PHASE_NAME="" PHASE_T0=0
phase() { PHASE_NAME=$1; PHASE_T0=$(now); log "[+$(elapsed "$T0")s] $1"; }
phase_done() {
    local dt
    dt=$(elapsed "$PHASE_T0")
    TIMINGS+=("$(printf '%-44s %7ss' "$PHASE_NAME" "$dt")")
    log "[+$(elapsed "$T0")s]   done in ${dt}s"
}
print_timings() {
    ((${#TIMINGS[@]})) || return 0
    log "timings:"
    local t
    for t in "${TIMINGS[@]}"; do log "  $t"; done
}

# fail_with_log LOG MESSAGE: the end of LOG on stderr, then die with MESSAGE.
fail_with_log() {
    printf '%s ERROR: %s; end of %s:\n' "$LOG_PREFIX" "$2" "$1" >&2
    tail -n 40 "$1" >&2 2>/dev/null || true
    exit 1
}

comm_of() {  # component -> /proc/PID/comm (15 characters at most)
    local c=$1
    echo "${c:0:15}"
}
pid_file() { echo "$RUN_DIR/$1.pid"; }
our_pid() { live_pid_from_file "$(pid_file "$1")" "$(comm_of "$1")"; }
log_file() { echo "$LOG_DIR/$1.log"; }

kubectl_() { "$BIN/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }

port_of() {
    case $1 in
        etcd) echo 2379 ;; kube-apiserver) echo "$APISERVER_PORT" ;;
        kube-controller-manager) echo 10257 ;; kube-scheduler) echo 10259 ;; kubelet) echo 10250 ;;
    esac
}
# port_user PORT: who listens on 127.0.0.1/0.0.0.0:PORT (empty if nobody).
port_user() { ss -Htlnp "sport = :$1" 2>/dev/null | awk '{ print $4, $6 }' | head -n 3; }

healthy() {  # component -> exit 0 if it answers its health check
    case $1 in
        etcd) curl -fsS -m 3 "http://$HOST:2379/health" 2>/dev/null | grep -q '"health":"true"' ;;
        kube-apiserver) [[ "$(curl -fsS -m 3 --cacert "$PKI/ca.crt" "$APISERVER_URL/readyz" 2>/dev/null)" == ok ]] ;;
        kube-controller-manager) [[ "$(curl -fsSk -m 3 "https://$HOST:10257/healthz" 2>/dev/null)" == ok ]] ;;
        kube-scheduler) [[ "$(curl -fsSk -m 3 "https://$HOST:10259/healthz" 2>/dev/null)" == ok ]] ;;
        kubelet) [[ "$(curl -fsS -m 3 "http://$HOST:10248/healthz" 2>/dev/null)" == ok ]] ;;
    esac
}

node_ready() {
    [[ "$(kubectl_ get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}
# The default ServiceAccount and its token Secret (pods are refused until it exists).
default_sa_ready() {
    [[ -n "$(kubectl_ -n default get serviceaccount default -o 'jsonpath={.secrets[0].name}' 2>/dev/null)" ]]
}

# wait_for WHAT TIMEOUT LOG CHECK [ARG...]: poll CHECK; die with the end of LOG after TIMEOUT s.
wait_for() {
    local what=$1 timeout=$2 logf=$3
    shift 3
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        ((SECONDS < deadline)) || fail_with_log "$logf" "$what: not reached after ${timeout}s"
        sleep 0.5
    done
}

binaries_cached() {
    local b
    for b in "${BINARIES[@]}" pause; do [[ -x $BIN/$b ]] || return 1; done
    [[ -f $BUILD_INFO ]] && grep -qxF "recipe: $BUILD_RECIPE" "$BUILD_INFO"
}

# ---------------------------------------------------------------- packages --

# The mirror (URI, suites, keyring) of this machine's own Debian `deb` entry.
write_debsrc_entry() {
    local f=/etc/apt/sources.list.d/pfcon-ci-debsrc.sources uri="" suites="" keyring=""
    if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
        # first stanza with Types: deb whose URI is not the security archive
        read -r uri suites keyring < <(awk '
            function flush() { if (deb && uri != "" && uri !~ /security/ && !done) { print uri, (suites == "" ? "-" : suites), (key == "" ? "-" : key); done = 1 } deb = 0; uri = ""; suites = ""; key = "" }
            /^[[:space:]]*$/ { flush(); next }
            /^Types:/ { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
            /^URIs:/ { uri = $2 }
            /^Suites:/ { suites = $2; for (i = 3; i <= NF; i++) suites = suites "," $i }
            /^Signed-By:/ { key = $2 }
            END { flush() }' /etc/apt/sources.list.d/debian.sources) || true
    fi
    if [[ -z $uri && -f /etc/apt/sources.list ]]; then
        read -r uri suites < <(awk '$1 == "deb" && $0 !~ /security/ {
            for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i, $(i + 1); exit } }' /etc/apt/sources.list) || true
    fi
    [[ -n $uri ]] || die "cannot find this machine's Debian mirror (no deb entry in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list)"
    [[ -n $suites && $suites != - ]] || suites=bookworm
    {
        echo "# Added by pfcon's scripts/k8s-cluster.sh: Debian source packages (apt-get source"
        echo "# kubernetes), from the same mirror as this machine's own deb entry."
        echo "Types: deb-src"
        echo "URIs: $uri"
        echo "Suites: ${suites//,/ }"
        echo "Components: main"
        [[ -z $keyring || $keyring == - ]] || echo "Signed-By: $keyring"
    } >"$f"
    log "wrote $f (deb-src $uri ${suites//,/ })"
}

kubernetes_source_known() {
    local out
    out=$(apt-cache showsrc --only-source kubernetes 2>/dev/null || true)
    grep -q '^Package: kubernetes' <<<"$out"
}

# ---------------------------------------------------------------- building --

# The memory a Go compile of this tree may take: ~1.4 GB peak RSS with 2 jobs.
build_jobs() {
    if [[ -n ${K8S_BUILD_JOBS:-} ]]; then echo "$K8S_BUILD_JOBS"; return; fi
    local avail_kb cores jobs
    avail_kb=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)
    cores=$(nproc)
    jobs=$((avail_kb / (1024 * 1024)))  # one job per free GiB
    ((jobs <= cores)) || jobs=$cores
    ((jobs >= 1)) || jobs=1
    echo "$jobs"
}

fetch_source() {
    mkdir -p "$DEBSRC"
    if compgen -G "$DEBSRC/kubernetes_*.orig.tar.gz" >/dev/null && compgen -G "$DEBSRC/kubernetes_*.debian.tar.xz" >/dev/null; then
        log "Debian source package already downloaded in $DEBSRC"
        return 0
    fi
    if ! kubernetes_source_known; then
        write_debsrc_entry
        log "apt-get update (deb-src lists)"
        APT_LOG=$LOG_DIR/apt.log apt_get update -q || fail_with_log "$LOG_DIR/apt.log" "apt-get update failed"
        kubernetes_source_known || die "apt knows no source package 'kubernetes' even with deb-src enabled (see /etc/apt/sources.list.d/pfcon-ci-debsrc.sources)"
    fi
    rm -f "$DEBSRC"/kubernetes_*
    # _apt must be able to write there, else apt warns it downloads unsandboxed.
    chmod 0755 "$CACHE" "$DEBSRC"
    (cd "$DEBSRC" && APT_LOG=$LOG_DIR/apt.log apt_get source --download-only kubernetes) ||
        fail_with_log "$LOG_DIR/apt.log" "apt-get source --download-only kubernetes failed"
    log "downloaded $(cd "$DEBSRC" && ls kubernetes_*.orig.tar.gz) ($(du -sh "$DEBSRC" | cut -f1))"
}

# patch_file FILE SED-EXPR CHECK-REGEX: apply SED-EXPR to FILE; die unless CHECK-REGEX then matches.
patch_file() {
    sed -i -e "$2" "$1"
    grep -qE "$3" "$1" || die "source fix did not apply to $1 (expected /$3/)"
}

# Unpack, patch and generate into a scratch tree, then move it into place: a
# tree at $TREE is always complete.
prepare_tree() {
    if [[ -f $TREE/.pfcon-prepared ]] && grep -qxF "recipe: $BUILD_RECIPE" "$TREE/.pfcon-prepared"; then
        log "source tree ready: $TREE"
        return 0
    fi
    local scratch=$TREE.partial orig debtar p
    rm -rf "$scratch"
    mkdir -p "$scratch"
    orig=$(compgen -G "$DEBSRC/kubernetes_*.orig.tar.gz" | head -n 1)
    debtar=$(compgen -G "$DEBSRC/kubernetes_*.debian.tar.xz" | head -n 1)
    tar -xzf "$orig" --strip-components=1 -C "$scratch"
    tar -xJf "$debtar" -C "$scratch"
    # Debian's own patches (kubectl printing, CVE-2021-25743).
    if [[ -f $scratch/debian/patches/series ]]; then
        while read -r p; do
            [[ -n $p && $p != \#* ]] || continue
            patch -d "$scratch" -p1 --forward --batch --quiet <"$scratch/debian/patches/$p" >>"$LOG_DIR/build.log" 2>&1 ||
                fail_with_log "$LOG_DIR/build.log" "Debian patch $p does not apply"
        done <"$scratch/debian/patches/series"
    fi
    # Fix 1: vendored reflect2 1.0.1 crashes under Go >= 1.18; use Debian's 1.0.2 (GOPATH mode
    # does not check vendor/modules.txt).
    local r2=/usr/share/gocode/src/github.com/modern-go/reflect2 vr2=$scratch/vendor/github.com/modern-go/reflect2
    [[ -f $r2/reflect2.go ]] || die "$r2 missing (package golang-github-modern-go-reflect2-dev)"
    rm -f "$vr2"/*.go "$vr2"/*.s
    cp "$r2"/*.go "$r2"/*.s "$vr2"/
    # Fix 2: no process here may lower oom_score_adj (no CAP_SYS_RESOURCE): runc fails
    # for the -998 pod sandbox and -997 Guaranteed containers. Clamp them (and the
    # docker daemon's -999) to 0; Burstable keeps its floor of 3 above Guaranteed.
    patch_file "$scratch/pkg/kubelet/dockershim/docker_sandbox.go" \
        's/defaultSandboxOOMAdj int = -998/defaultSandboxOOMAdj int = 0/' 'defaultSandboxOOMAdj int = 0$'
    patch_file "$scratch/pkg/kubelet/qos/policy.go" \
        's/guaranteedOOMScoreAdj int = -997/guaranteedOOMScoreAdj int = 0/; s/(1000 + guaranteedOOMScoreAdj)/3/g' \
        'guaranteedOOMScoreAdj int = 0$'
    patch_file "$scratch/pkg/kubelet/dockershim/cm/container_manager_linux.go" \
        's/dockerOOMScoreAdj = -999/dockerOOMScoreAdj = 0/' 'dockerOOMScoreAdj = 0$'
    # Fix 3: pkg/generated/openapi is not in the tarball.
    log "make gen_openapi (log: $LOG_DIR/build.log)"
    (
        cd "$scratch"
        close_inherited_fds
        exec env GO111MODULE=off GOFLAGS="-p=$JOBS" GOCACHE="$GOCACHE_DIR" GOPROXY=off CGO_ENABLED=0 \
            nice -n 10 make gen_openapi
    ) >>"$LOG_DIR/build.log" 2>&1 || fail_with_log "$LOG_DIR/build.log" "make gen_openapi failed"
    [[ -s $scratch/pkg/generated/openapi/zz_generated.openapi.go ]] || die "make gen_openapi produced no pkg/generated/openapi/zz_generated.openapi.go"
    echo "recipe: $BUILD_RECIPE" >"$scratch/.pfcon-prepared"
    rm -rf "$TREE"
    mv "$scratch" "$TREE"
}

# go build (GOPATH mode) of the five binaries, with a heartbeat line every 30 s.
go_build() {
    local out=$1 pkgs=() b pid n last=0
    for b in "${BINARIES[@]}"; do pkgs+=("./cmd/$b"); done
    local ldflags="-s -w -buildid=" key val pkg
    for pkg in client-go/pkg/version component-base/version; do
        for key in gitVersion:$K8S_VERSION gitCommit:$K8S_GIT_COMMIT gitTreeState:archive gitMajor:1 gitMinor:20 \
            buildDate:"$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
            val=${key#*:}
            ldflags+=" -X 'k8s.io/kubernetes/vendor/k8s.io/$pkg.${key%%:*}=$val'"
        done
    done
    (
        cd "$TREE"
        close_inherited_fds
        exec env GOPATH="$GOPATH_DIR" GO111MODULE=off CGO_ENABLED=0 GOCACHE="$GOCACHE_DIR" GOPROXY=off GOFLAGS= \
            nice -n 10 ionice -c 2 -n 7 go build -v -p "$JOBS" -trimpath -ldflags "$ldflags" -o "$out/" "${pkgs[@]}"
    ) >>"$LOG_DIR/build.log" 2>&1 &
    pid=$!
    while proc_alive "$pid"; do
        sleep 1
        if ((SECONDS - last >= 30)); then
            last=$SECONDS
            n=$(grep -c '^k8s.io/\|^github.com/\|^golang.org/\|^google.golang.org/\|^sigs.k8s.io/' "$LOG_DIR/build.log" || true)
            log "[+$(elapsed "$T0")s]   go build: still compiling ($n packages so far, $(awk '/^MemAvailable:/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo) GiB memory free)"
        fi
    done
    wait "$pid" || fail_with_log "$LOG_DIR/build.log" "go build failed"
}

cmd_build() {
    mkdir -p "$LOG_DIR"
    if binaries_cached; then
        log "binaries cached in $BIN ($(sed -n 's/^debian-source: //p' "$BUILD_INFO"))"
        return 0
    fi
    take_lock /run/pfcon-ci/k8s-cluster-build.lock 1800 "another run has been building Kubernetes for 30 min"
    binaries_cached && { log "binaries were built by a concurrent run"; return 0; }
    log "building Kubernetes $K8S_VERSION from Debian's source package (cold: ~6-8 min on 2 cores); log: $LOG_DIR/build.log"
    echo "---- $(date -u +%FT%TZ) $ME build" >>"$LOG_DIR/build.log"

    phase "packages (build + runtime)"
    ensure_packages --log "$LOG_DIR/apt.log" "${BUILD_PKGS[@]}" "${RUNTIME_PKGS[@]}"
    phase_done

    local avail_gib
    avail_gib=$(awk '/^MemAvailable:/ { printf "%d", $2 / 1048576 }' /proc/meminfo)
    ((avail_gib >= 1)) || die "only ${avail_gib} GiB of memory available; the build needs ~1.5 GiB"
    JOBS=$(build_jobs)
    log "Go: $(go version | cut -d' ' -f3-), ${JOBS} parallel jobs (K8S_BUILD_JOBS), ${avail_gib} GiB available, niced"

    phase "source: apt-get source --download-only kubernetes"
    fetch_source
    phase_done

    phase "source: unpack, Debian patches, fixes, make gen_openapi"
    prepare_tree
    phase_done

    phase "go build ${BINARIES[*]}"
    local new=$BIN.new
    rm -rf "$new"
    mkdir -p "$new" "$GOCACHE_DIR"
    go_build "$new"
    phase_done

    phase "pause $PAUSE_VERSION (static, build/pause/linux/pause.c)"
    gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-pfcon" -o "$new/pause" "$TREE/build/pause/linux/pause.c" >>"$LOG_DIR/build.log" 2>&1 ||
        fail_with_log "$LOG_DIR/build.log" "gcc pause.c failed"
    strip "$new/pause"
    phase_done

    local v
    v=$("$new/kubectl" version --client --short 2>/dev/null || true)
    [[ $v == *"$K8S_VERSION"* ]] || die "the built kubectl reports '$v', not $K8S_VERSION"
    {
        echo "recipe: $BUILD_RECIPE"
        echo "debian-source: $(cd "$DEBSRC" && ls kubernetes_*.dsc)"
        echo "go: $(go version)"
        echo "built: $(date -u +%FT%TZ)"
    } >"$new/BUILD-INFO"
    rm -rf "$BIN"
    mv "$new" "$BIN"
    log "binaries in $BIN ($(du -sh "$BIN" | cut -f1)); Go build cache $GOCACHE_DIR ($(du -sh "$GOCACHE_DIR" | cut -f1))"
}

# ------------------------------------------------------- PKI and kubeconfigs --

write_kubeconfig() {  # FILE USER TOKEN
    local ca
    ca=$(base64 -w0 <"$PKI/ca.crt")
    umask 077
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: pfcon-k8s
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $ca
users:
- name: $2
  user:
    token: $3
contexts:
- name: $2@pfcon-k8s
  context:
    cluster: pfcon-k8s
    user: $2
    namespace: default
current-context: $2@pfcon-k8s
EOF
    umask 022
}

ensure_pki() {
    mkdir -p "$PKI"
    chmod 0700 "$PKI"
    if [[ ! -f $PKI/ca.crt || ! -f $PKI/apiserver.crt || ! -f $PKI/sa.pub ]]; then
        log "creating PKI in $PKI (openssl)"
        cat >"$PKI/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:$HOST, IP:$SERVICE_IP, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local
EOF
        (
            cd "$PKI"
            openssl genrsa -out ca.key 2048
            openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj /CN=pfcon-k8s-ca \
                -config openssl.cnf -extensions v3_ca -out ca.crt
            openssl genrsa -out apiserver.key 2048
            openssl req -new -key apiserver.key -subj /CN=kube-apiserver -config openssl.cnf -out apiserver.csr
            openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 3650 \
                -extfile openssl.cnf -extensions v3_server -out apiserver.crt
            openssl genrsa -out sa.key 2048
            openssl rsa -in sa.key -pubout -out sa.pub
            rm -f apiserver.csr ca.srl
            chmod 0600 ./*.key
        ) >"$LOG_DIR/pki.log" 2>&1 || fail_with_log "$LOG_DIR/pki.log" "openssl failed"
    fi
    if [[ ! -f $TOKENS ]]; then
        log "creating static tokens $TOKENS and kubeconfigs"
        local t_admin t_kubelet t_cm t_sched
        t_admin=$(openssl rand -hex 24) t_kubelet=$(openssl rand -hex 24)
        t_cm=$(openssl rand -hex 24) t_sched=$(openssl rand -hex 24)
        umask 077
        cat >"$TOKENS.new" <<EOF
$t_admin,admin,admin,"system:masters"
$t_kubelet,system:node:$NODE_NAME,kubelet,"system:nodes"
$t_cm,system:kube-controller-manager,kube-controller-manager
$t_sched,system:kube-scheduler,kube-scheduler
EOF
        umask 022
        write_kubeconfig "$STATE/admin.kubeconfig" admin "$t_admin"
        write_kubeconfig "$STATE/kubelet.kubeconfig" "system:node:$NODE_NAME" "$t_kubelet"
        write_kubeconfig "$STATE/controller-manager.kubeconfig" system:kube-controller-manager "$t_cm"
        write_kubeconfig "$STATE/scheduler.kubeconfig" system:kube-scheduler "$t_sched"
        mv "$TOKENS.new" "$TOKENS"
    fi
    mkdir -p "$CNI_CONF_DIR" "$CNI_CACHE_DIR"
    # Loopback only: no pod network (no bridge, no iptables); the node is Ready with it.
    cat >"$CNI_CONF_DIR/10-pfcon-loopback.conflist" <<EOF
{
  "cniVersion": "0.3.1",
  "name": "pfcon-loopback",
  "plugins": [ { "type": "loopback" } ]
}
EOF
}

# ---------------------------------------------------------------- images --

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

ensure_pause_image() {
    image_exists "$PAUSE_IMAGE" && return 0
    local root
    root=$(mktemp -d /var/tmp/pfcon-k8s-pause.XXXXXX)
    at_exit rm -rf "$root"
    cp "$BIN/pause" "$root/pause"
    chmod 0755 "$root"
    tar --numeric-owner -C "$root" -c . |
        docker import --change 'ENTRYPOINT ["/pause"]' --message "pfcon CI: k8s pause $PAUSE_VERSION (static)" - "$PAUSE_IMAGE" >/dev/null
    rm -rf "$root"
    log "imported $PAUSE_IMAGE"
}

# --------------------------------------------------------------- processes --

component_cmd() {  # component -> its command line (one word a line)
    local c=$1
    case $c in
        etcd) printf '%s\n' etcd --name pfcon-k8s --data-dir "$ETCD_DATA" \
            --listen-client-urls "http://$HOST:2379" --advertise-client-urls "http://$HOST:2379" \
            --listen-peer-urls "http://$HOST:2380" --initial-advertise-peer-urls "http://$HOST:2380" \
            --initial-cluster "pfcon-k8s=http://$HOST:2380" --listen-metrics-urls "http://$HOST:2381" \
            --unsafe-no-fsync --quota-backend-bytes 2147483648 --logger zap --log-outputs stderr ;;
        kube-apiserver) printf '%s\n' "$BIN/kube-apiserver" \
            --advertise-address "$HOST" --bind-address "$HOST" --secure-port "$APISERVER_PORT" --insecure-port 0 \
            --etcd-servers "http://$HOST:2379" \
            --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
            --client-ca-file "$PKI/ca.crt" --token-auth-file "$TOKENS" \
            --authorization-mode Node,RBAC --allow-privileged=true \
            --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
            --service-account-issuer "$SA_ISSUER" --api-audiences "$SA_ISSUER" \
            --service-cluster-ip-range "$SERVICE_CIDR" --endpoint-reconciler-type none \
            --kubelet-preferred-address-types InternalIP,Hostname --profiling=false ;;
        kube-controller-manager) printf '%s\n' "$BIN/kube-controller-manager" \
            --kubeconfig "$STATE/controller-manager.kubeconfig" \
            --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
            --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
            --bind-address "$HOST" --secure-port 10257 --port 0 --leader-elect=false \
            --use-service-account-credentials=true --cluster-name pfcon-k8s \
            --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
            --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
            --profiling=false ;;
        kube-scheduler) printf '%s\n' "$BIN/kube-scheduler" \
            --kubeconfig "$STATE/scheduler.kubeconfig" \
            --authentication-kubeconfig "$STATE/scheduler.kubeconfig" \
            --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
            --bind-address "$HOST" --secure-port 10259 --port 0 --leader-elect=false --profiling=false ;;
        kubelet) printf '%s\n' "$BIN/kubelet" \
            --kubeconfig "$STATE/kubelet.kubeconfig" --hostname-override "$NODE_NAME" \
            --address "$HOST" --port 10250 --read-only-port 0 \
            --healthz-bind-address "$HOST" --healthz-port 10248 \
            --anonymous-auth=true --authorization-mode AlwaysAllow \
            --root-dir "$KUBELET_DIR" --cert-dir "$KUBELET_DIR/pki" \
            --volume-plugin-dir "$KUBELET_DIR/volume-plugins" \
            --container-runtime docker --docker-endpoint "unix://$DOCKER_SOCK" \
            --pod-infra-container-image "$PAUSE_IMAGE" \
            --network-plugin cni --cni-conf-dir "$CNI_CONF_DIR" --cni-bin-dir "$CNI_BIN_DIR" \
            --cni-cache-dir "$CNI_CACHE_DIR" --hairpin-mode none --make-iptables-util-chains=false \
            --cgroup-driver cgroupfs --cgroups-per-qos=false --enforce-node-allocatable= \
            --oom-score-adj 0 --fail-swap-on=false \
            --image-gc-high-threshold 100 --image-gc-low-threshold 99 \
            --eviction-hard 'memory.available<100Mi,nodefs.available<2%,imagefs.available<2%' \
            --register-node=true ;;
    esac
}

start_component() {
    local c=$1 pid logf port users cmd=()
    logf=$(log_file "$c")
    if pid=$(our_pid "$c"); then
        if healthy "$c"; then
            log "$c already running (pid $pid)"
            return 0
        fi
        log "$c running (pid $pid) but not healthy yet; waiting"
    else
        remove_stale_pid_file "$(pid_file "$c")" "$(comm_of "$c")"
        port=$(port_of "$c")
        users=$(port_user "$port")
        [[ -z $users ]] || die "port $port, which $c needs, is taken by: $users (a cluster from another state dir? not ours: left alone)"
        mapfile -t cmd < <(component_cmd "$c")
        echo "---- $(date -u +%FT%TZ) $ME start: ${cmd[*]}" >>"$logf"
        spawn_detached "$STATE" "$logf" "${cmd[@]}"
        pid=$SPAWNED_PID
        echo "$pid" >"$(pid_file "$c")"
        STARTED_ANY=1
    fi
    wait_until_ready "$pid" "$c" "$START_TIMEOUT" "$logf" healthy "$c"
    log "[+$(elapsed "$T0")s]   $c ready (pid $pid, log $logf)"
}

all_healthy() {
    local c
    for c in "${COMPONENTS[@]}"; do
        our_pid "$c" >/dev/null && healthy "$c" || return 1
    done
    node_ready
}

run_smoke_job() {
    kubectl_ -n default delete job "$SMOKE_JOB" --ignore-not-found --wait=true >/dev/null 2>&1 || true
    kubectl_ apply -f - >/dev/null <<EOF
apiVersion: batch/v1
kind: Job
metadata:
  name: $SMOKE_JOB
  namespace: default
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: smoke
        image: $BUSYBOX_IMAGE
        imagePullPolicy: Never
        command: ["sh", "-c", "echo pfcon-k8s-smoke-ok on \$(hostname)"]
        resources:
          limits: {cpu: 100m, memory: 32Mi}
EOF
    local deadline=$((SECONDS + 120)) st="" out
    while ((SECONDS < deadline)); do
        st=$(kubectl_ -n default get job "$SMOKE_JOB" -o 'jsonpath={.status.succeeded}/{.status.failed}' 2>/dev/null || true)
        [[ $st == 1/* || $st == */1 ]] && break
        sleep 0.5
    done
    if [[ $st != 1/* ]]; then
        kubectl_ -n default describe pods -l "job-name=$SMOKE_JOB" >&2 2>&1 || true
        fail_with_log "$(log_file kubelet)" "smoke Job $SMOKE_JOB did not succeed (succeeded/failed: '$st')"
    fi
    out=$(kubectl_ -n default logs "job/$SMOKE_JOB" 2>&1) || true
    [[ $out == pfcon-k8s-smoke-ok* ]] || die "smoke Job $SMOKE_JOB succeeded but its log reads: $out"
    kubectl_ -n default delete job "$SMOKE_JOB" --cascade=background --wait=false >/dev/null
    log "smoke Job ran $BUSYBOX_IMAGE on node $NODE_NAME; log: $out"
}

cmd_start() {
    ((EUID == 0)) || die "needs root"
    mkdir -p "$LOG_DIR" "$RUN_DIR"
    if [[ -x $BIN/kubectl && -f $ADMIN_KUBECONFIG ]] && all_healthy; then
        log "cluster already running and healthy: node $NODE_NAME Ready ($APISERVER_URL); eval \"\$(bash $0 env)\""
        return 0
    fi
    take_lock "$LOCK_FILE" 1800 "another start/stop of the cluster holds $LOCK_FILE"
    STARTED_ANY=0

    phase "docker engine (docker-engine.sh start)"
    bash "$SCRIPT_DIR/docker-engine.sh" start
    phase_done

    if ! binaries_cached; then
        cmd_build
    else
        log "binaries cached in $BIN"
    fi

    phase "runtime packages, PKI, tokens, kubeconfigs, images"
    ensure_packages --log "$LOG_DIR/apt.log" "${RUNTIME_PKGS[@]}"
    [[ -x $CNI_BIN_DIR/loopback ]] || die "$CNI_BIN_DIR/loopback missing (containernetworking-plugins)"
    ensure_pki
    ensure_pause_image
    bash "$SCRIPT_DIR/test-images.sh" --busybox-only >"$LOG_DIR/test-images.log" 2>&1 ||
        fail_with_log "$LOG_DIR/test-images.log" "test-images.sh --busybox-only failed"
    phase_done

    phase "start etcd, apiserver, controller-manager, scheduler, kubelet"
    mkdir -p "$ETCD_DATA" "$KUBELET_DIR"
    chmod 0700 "$ETCD_DATA"
    local c
    for c in "${COMPONENTS[@]}"; do start_component "$c"; done
    phase_done

    phase "wait: node $NODE_NAME Ready, default ServiceAccount"
    wait_for "node $NODE_NAME Ready" "$START_TIMEOUT" "$(log_file kubelet)" node_ready
    wait_for "ServiceAccount default/default with its token" "$START_TIMEOUT" "$(log_file kube-controller-manager)" default_sa_ready
    phase_done

    if ((SMOKE)) && ((STARTED_ANY)); then
        phase "smoke Job ($BUSYBOX_IMAGE, imagePullPolicy Never)"
        run_smoke_job
        phase_done
    fi
    print_timings
    log "cluster ready in $(elapsed "$T0")s: node $NODE_NAME, $APISERVER_URL, kubectl $K8S_VERSION; eval \"\$(bash $0 env)\""
}

# stop: the kubelet first (so it restarts nothing), etcd last.
cmd_stop() {
    take_lock "$LOCK_FILE" 300 "another start/stop of the cluster holds $LOCK_FILE"
    local i c pid n=0 ids
    for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
        c=${COMPONENTS[i]}
        if pid=$(our_pid "$c"); then
            stop_pid "$pid" "$(comm_of "$c")" "$c" 20
            n=$((n + 1))
        fi
        rm -f "$(pid_file "$c")"
    done
    if docker info >/dev/null 2>&1; then
        # the kubelet's (dockershim) containers: k8s_<container>_<pod>_<namespace>_<uid>_<n>
        ids=$(docker ps -aq --filter name=^k8s_ --filter label=io.kubernetes.pod.namespace)
        if [[ -n $ids ]]; then
            # shellcheck disable=SC2086  # one ID a word
            docker rm -f $ids >/dev/null
            log "removed $(wc -w <<<"$ids") kubelet containers (k8s_*)"
        fi
    fi
    unmount_kubelet_volumes
    log "stopped ($n processes)"
}

# What the kubelet mounted under its root dir (secret tmpfs volumes; the root dir
# itself, which it bind-mounts onto itself), deepest first; stacked mounts too.
unmount_kubelet_volumes() {
    local m count=0 _
    [[ -d $KUBELET_DIR ]] || return 0
    for _ in 1 2 3 4 5; do
        local mounts=()
        mapfile -t mounts < <(awk -v d="$KUBELET_DIR" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r)
        ((${#mounts[@]})) || break
        for m in "${mounts[@]}"; do
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
            count=$((count + 1))
        done
    done
    ((count == 0)) || log "unmounted $count kubelet mounts under $KUBELET_DIR"
}

cmd_status() {
    local c pid rc=0 state
    for c in "${COMPONENTS[@]}"; do
        if pid=$(our_pid "$c"); then
            if healthy "$c"; then state="running, healthy"; else state="running, NOT healthy"; rc=1; fi
            log "$(printf '%-24s pid %-7s %s' "$c" "$pid" "$state")"
        else
            log "$(printf '%-24s %s' "$c" "not running")"
            rc=1
        fi
    done
    if [[ -x $BIN/kubectl && -f $ADMIN_KUBECONFIG ]] && healthy kube-apiserver; then
        local node
        node=$(kubectl_ get node "$NODE_NAME" --no-headers 2>/dev/null || true)
        log "node: ${node:-$NODE_NAME not registered}"
        node_ready || rc=1
    fi
    if binaries_cached; then log "binaries: $BIN ($(sed -n 's/^debian-source: //p' "$BUILD_INFO"))"; else log "binaries: not built"; fi
    log "state: $STATE, logs: $LOG_DIR"
    if ((rc == 0)); then log "cluster is up: eval \"\$(bash $0 env)\""; else log "cluster is NOT (fully) up"; fi
    return "$rc"
}

cmd_reset() {
    case $STATE in /|/var|/var/lib|/tmp|/root|/home|"") die "refusing to wipe K8S_STATE_DIR=$STATE" ;; esac
    cmd_stop
    release_lock
    if awk -v d="$STATE/" 'index($2, d) == 1 { f = 1 } END { exit !f }' /proc/mounts; then
        die "mounts remain under $STATE; not wiping it"
    fi
    log "wiping $STATE"
    rm -rf "$STATE"
    cmd_start
}

cmd_env() {
    cat <<EOF
export KUBECONFIG=$ADMIN_KUBECONFIG
export PATH="$BIN:\$PATH"
EOF
}

# pvc NAME HOSTPATH [NAMESPACE]: a static hostPath PV (no StorageClass) pre-bound to PVC NAME.
cmd_pvc() {
    local name=${1:-} hostpath=${2:-} ns=${3:-default}
    [[ -n $name && -n $hostpath ]] || die "usage: $ME pvc NAME HOSTPATH [NAMESPACE]"
    [[ $hostpath == /* ]] || die "HOSTPATH must be absolute: $hostpath"
    local dns='^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'
    [[ $name =~ $dns && ${#name} -le 63 ]] || die "NAME '$name' is not a DNS-1123 label"
    [[ $ns =~ $dns && ${#ns} -le 63 ]] || die "NAMESPACE '$ns' is not a DNS-1123 label"
    if ! [[ -x $BIN/kubectl && -f $ADMIN_KUBECONFIG ]] || ! healthy kube-apiserver; then
        die "the cluster is not running: bash $0 start"
    fi
    local pv="pfcon-$ns-$name" cur
    mkdir -p "$hostpath"
    kubectl_ get namespace "$ns" >/dev/null 2>&1 || kubectl_ create namespace "$ns" >/dev/null
    cur=$(kubectl_ get pv "$pv" -o 'jsonpath={.spec.hostPath.path}' 2>/dev/null || true)
    if [[ -n $cur && $cur != "$hostpath" ]]; then
        die "PersistentVolume $pv exists with hostPath $cur, not $hostpath (delete it first: kubectl delete pvc -n $ns $name; kubectl delete pv $pv)"
    fi
    if [[ -z $cur ]]; then
        kubectl_ apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata:
  name: $pv
  labels: {app.kubernetes.io/managed-by: pfcon-k8s-cluster.sh, pfcon/claim: $name, pfcon/namespace: $ns}
spec:
  capacity: {storage: $PV_CAPACITY}
  accessModes: [ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  volumeMode: Filesystem
  hostPath: {path: "$hostpath", type: Directory}
  claimRef: {namespace: $ns, name: $name}
EOF
    elif [[ "$(kubectl_ get pv "$pv" -o 'jsonpath={.status.phase}')" == Released ]]; then
        # The PVC was deleted and is made again: let the PV take the new claim.
        kubectl_ patch pv "$pv" --type merge -p '{"spec":{"claimRef":{"uid":null,"resourceVersion":null}}}' >/dev/null
    fi
    if ! kubectl_ -n "$ns" get pvc "$name" >/dev/null 2>&1; then
        kubectl_ apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: $name
  namespace: $ns
  labels: {app.kubernetes.io/managed-by: pfcon-k8s-cluster.sh}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: ""
  volumeName: $pv
  resources: {requests: {storage: $PV_CAPACITY}}
EOF
    fi
    local deadline=$((SECONDS + 60)) phase_ vol=""
    while :; do
        phase_=$(kubectl_ -n "$ns" get pvc "$name" -o 'jsonpath={.status.phase}' 2>/dev/null || true)
        vol=$(kubectl_ -n "$ns" get pvc "$name" -o 'jsonpath={.spec.volumeName}' 2>/dev/null || true)
        [[ $phase_ == Bound ]] && break
        # A PV still bound to an earlier, deleted claim of that name turns Released: free it.
        if [[ "$(kubectl_ get pv "$pv" -o 'jsonpath={.status.phase}' 2>/dev/null)" == Released ]]; then
            kubectl_ patch pv "$pv" --type merge -p '{"spec":{"claimRef":{"uid":null,"resourceVersion":null}}}' >/dev/null || true
        fi
        ((SECONDS < deadline)) || {
            kubectl_ -n "$ns" describe pvc "$name" >&2 || true
            die "PVC $ns/$name is '$phase_', not Bound, after 60s"
        }
        sleep 0.5
    done
    [[ $vol == "$pv" ]] || die "PVC $ns/$name is bound to $vol, not to $pv (made by someone else?)"
    log "PVC $ns/$name Bound to PV $pv (hostPath $hostpath, ReadWriteMany, $PV_CAPACITY); mount it with persistentVolumeClaim.claimName=$name and subPath"
}

# -------------------------------------------------------------------- main --

case ${1:-start} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    reset) cmd_reset ;;
    build) ((EUID == 0)) || die "needs root"; cmd_build; print_timings ;;
    env) cmd_env ;;
    pvc) shift; cmd_pvc "$@" ;;
    -h | --help) usage ;;
    *) die "unknown subcommand '$1' (use start, stop, status, reset, build, env or pvc)" ;;
esac
