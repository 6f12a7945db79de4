#!/usr/bin/env bash
# A real one-node Kubernetes cluster on this machine, made from the project's own
# binaries: pods run in containerd, on a bridge network this script creates.
#
#   scripts/node-cluster.sh up      start everything (idempotent), print the kubeconfig
#   scripts/node-cluster.sh down    stop everything; leaves no process, mount,
#                                   iptables rule, bridge or network namespace behind
#   scripts/node-cluster.sh status  exit 0 only if the node is Ready
#   scripts/node-cluster.sh volumes recreate Released local volumes (after PVCs are deleted)
#
# Parts (all host processes, root): etcd and kube-apiserver (bound to the bridge
# address, so pods reach it through the `kubernetes` Service), kube-controller-
# manager, kube-scheduler, kube-proxy (iptables mode; Service routing), kubelet
# (CRI to a containerd of its own: own config, socket, root and state; cgroupfs),
# CoreDNS (cluster DNS on the bridge address), bridge + host-local CNI plugins
# from Debian's containernetworking-plugins. Images come from scripts/image.sh and
# are loaded with `ctr -n k8s.io images import`; nothing is pulled.
# Storage: a StorageClass `lethe-local` (default) with static `local` volumes
# under $DIR/volumes (local volumes honour fsGroup, hostPath ones do not).
#
# Two settings this kind of machine needs (issue #13): `failCgroupV1: false`
# (cgroups v1) and containerd's `restrict_oom_score_adj = true` (the machine
# refuses to lower oom_score_adj; without it every sandbox fails in runc).
#
# Environment (defaults in brackets):
#   LETHE_NODE_DIR      state, certs, logs, pids          [.cache/node-cluster]
#   LETHE_NODE_KUBECONFIG  admin kubeconfig written by up  [.cache/node-kubeconfig]
#   LETHE_BIN_DIR       binaries (build-tools.sh --node)   [.cache/bin]
#   LETHE_NODE_BRIDGE   bridge name                        [lethe0]
#   LETHE_NODE_POD_CIDR pod range (a /24)                  [10.244.0.0/24]
#   LETHE_NODE_SVC_CIDR Service range                      [10.96.0.0/24]
#   LETHE_NODE_VOLUMES  number of local volumes            [8]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${LETHE_NODE_DIR:-$ROOT/.cache/node-cluster}"
KUBECONFIG_OUT="${LETHE_NODE_KUBECONFIG:-$ROOT/.cache/node-kubeconfig}"
BIN="${LETHE_BIN_DIR:-$ROOT/.cache/bin}"
BRIDGE="${LETHE_NODE_BRIDGE:-lethe0}"
POD_CIDR="${LETHE_NODE_POD_CIDR:-10.244.0.0/24}"
SVC_CIDR="${LETHE_NODE_SVC_CIDR:-10.96.0.0/24}"
NVOLUMES="${LETHE_NODE_VOLUMES:-8}"
IMAGES="$ROOT/.cache/image"
CNI_BIN=/usr/lib/cni
NODE=lethe-node
# The bridge's own address: the node IP, where the API server, CoreDNS and the
# kubelet listen (reachable from pods and from this host, from nowhere else).
NET="${POD_CIDR%/*}"
HOST_IP="${NET%.*}.1"
SVC_NET="${SVC_CIDR%/*}"
API_SVC_IP="${SVC_NET%.*}.1"
API_PORT=6443
ETCD_PORT=22379
ETCD_PEER_PORT=22380
# Sockets live under /run (short paths: unix sockets are limited to 108 bytes).
RUN_DIR=/run/lethe-node
CTRD_SOCK="$RUN_DIR/containerd.sock"
CTR=(ctr --address "$CTRD_SOCK" --namespace k8s.io)
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy coredns)

log() { printf '[node-cluster] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

alive_pid() { # name
    local f="$DIR/$1.pid" pid
    [[ -f "$f" ]] || return 1
    pid="$(cat "$f")"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$1" || return 1
    echo "$pid"
}

stop_one() { # name [grace seconds]
    local pid
    if pid="$(alive_pid "$1")"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq "$((${2:-10} * 10))"); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        log "stopped $1 (pid $pid)"
    fi
    rm -f "$DIR/$1.pid"
}

start_bg() { # name command...
    local name=$1
    shift
    setsid "$@" </dev/null >"$DIR/logs/$name.log" 2>&1 &
    echo $! >"$DIR/$name.pid"
}

kubectl() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_OUT" "$@"; }

wait_until() { # seconds what command...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "$what not reached within $((deadline - SECONDS + $1))s (logs in $DIR/logs)"
        sleep 0.5
    done
}

check_prereqs() {
    local b
    for b in etcd kube-apiserver kubectl kubelet kube-controller-manager kube-scheduler kube-proxy coredns; do
        [[ -x "$BIN/$b" ]] || die "$BIN/$b is missing: run scripts/build-tools.sh --node"
    done
    for b in containerd containerd-shim-runc-v2 runc ctr iptables conntrack openssl ip; do
        command -v "$b" >/dev/null || die "$b is missing (apt-get install containerd runc iptables conntrack openssl iproute2)"
    done
    [[ -x "$CNI_BIN/bridge" && -x "$CNI_BIN/host-local" && -x "$CNI_BIN/loopback" ]] \
        || die "CNI plugins missing in $CNI_BIN (apt-get install containernetworking-plugins)"
    [[ -s "$IMAGES/pause.tar" && -s "$IMAGES/lethe.tar" ]] \
        || die "images missing in $IMAGES: run scripts/image.sh build (make image)"
    ((EUID == 0)) || die "must run as root (containerd, kubelet, iptables)"
}

gen_pki() {
    local pki="$DIR/pki"
    mkdir -p "$pki"
    [[ -f "$pki/apiserver.crt" && -f "$pki/kubelet-client.crt" && -f "$pki/sa.key" ]] && return
    log "creating certificates and keys in $pki"
    (
        cd "$pki"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
            -subj "/CN=lethe-node-ca" -keyout ca.key -out ca.crt 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=kube-apiserver" \
            -keyout apiserver.key -out apiserver.csr 2>/dev/null
        printf '%s\n' "subjectAltName=IP:$HOST_IP,IP:$API_SVC_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
            "extendedKeyUsage=serverAuth" >apiserver.ext
        openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
            -days 3650 -extfile apiserver.ext -out apiserver.crt 2>/dev/null
        # The API server's client certificate for the kubelet (logs, exec, port-forward).
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" \
            -keyout kubelet-client.key -out kubelet-client.csr 2>/dev/null
        printf '%s\n' "extendedKeyUsage=clientAuth" >client.ext
        openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
            -days 3650 -extfile client.ext -out kubelet-client.crt 2>/dev/null
        openssl ecparam -name prime256v1 -genkey -noout -out sa.key 2>/dev/null
        openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null
        rm -f ./*.csr ./*.ext ca.srl
        chmod 600 ./*.key
    )
}

# One static token per component (token,user,uid,"groups"): the users the
# default RBAC bootstrap policy already grants (system:kube-scheduler, ...).
gen_tokens() {
    [[ -f "$DIR/tokens.csv" ]] && return
    local who user group
    : >"$DIR/tokens.csv"
    for who in admin kubelet controller-manager scheduler proxy coredns; do
        case $who in
            admin) user=lethe-admin group=system:masters ;;
            kubelet) user=system:node:$NODE group=system:nodes ;;
            controller-manager) user=system:kube-controller-manager group="" ;;
            scheduler) user=system:kube-scheduler group="" ;;
            proxy) user=system:kube-proxy group="" ;;
            coredns) user=lethe-coredns group="" ;;
        esac
        tok="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
        printf '%s' "$tok" >"$DIR/$who.token"
        printf '%s,%s,%s,"%s"\n' "$tok" "$user" "$user" "$group" >>"$DIR/tokens.csv"
    done
    chmod 600 "$DIR"/*.token "$DIR/tokens.csv"
}

kubeconfig_for() { # who file
    local ca
    ca="$(base64 -w0 <"$DIR/pki/ca.crt")"
    cat >"$2.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: lethe-node
  cluster:
    server: https://$HOST_IP:$API_PORT
    certificate-authority-data: $ca
users:
- name: $1
  user:
    token: $(cat "$DIR/$1.token")
contexts:
- name: lethe-node
  context:
    cluster: lethe-node
    user: $1
current-context: lethe-node
EOF
    chmod 600 "$2.tmp"
    mv -f "$2.tmp" "$2"
}

setup_bridge() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
    fi
    ip addr show dev "$BRIDGE" | grep -q "inet $HOST_IP/" \
        || ip addr add "$HOST_IP/${POD_CIDR#*/}" dev "$BRIDGE"
    ip link set "$BRIDGE" up
}

write_cni() {
    mkdir -p "$DIR/cni/net.d" "$DIR/cni/ipam"
    # No ipMasq: pods talk only to each other and to this host (API server,
    # CoreDNS, the test's S3 server on $HOST_IP); nothing is routed elsewhere.
    cat >"$DIR/cni/net.d/10-lethe.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "lethe-node",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false,
     "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$DIR/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$HOST_IP"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "loopback"}
  ]
}
EOF
}

write_containerd_config() {
    mkdir -p "$DIR/containerd" "$RUN_DIR"
    cat >"$DIR/containerd/config.toml" <<EOF
version = 2
root = "$DIR/containerd/root"
state = "$RUN_DIR/containerd-state"
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$RUN_DIR/containerd.sock.ttrpc"
[debug]
  address = "$RUN_DIR/containerd-debug.sock"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$(cat "$IMAGES/pause.ref")"
  # This machine refuses to lower oom_score_adj (issue #13).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$DIR/cni/net.d"
EOF
}

write_kubelet_config() {
    mkdir -p "$DIR/kubelet"
    # Pods resolve cluster names at CoreDNS on the bridge address; nothing else.
    printf 'nameserver %s\n' "$HOST_IP" >"$DIR/resolv.conf"
    cat >"$DIR/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $HOST_IP
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 0
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $DIR/pki/ca.crt}
authorization:
  mode: Webhook
cgroupDriver: cgroupfs
# cgroups v1 on this kind of machine (issue #13).
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$CTRD_SOCK
clusterDomain: cluster.local
clusterDNS: [$HOST_IP]
resolvConf: $DIR/resolv.conf
# A shared test machine: do not evict pods or collect images over disk use
# that is not ours.
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
maxPods: 50
serializeImagePulls: false
EOF
}

write_coredns_config() {
    cat >"$DIR/Corefile" <<EOF
cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $HOST_IP
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $DIR/coredns.kubeconfig lethe-node
        pods insecure
        ttl 5
    }
}
.:53 {
    bind $HOST_IP
    errors
}
EOF
}

# ClusterRole for CoreDNS (the kubernetes plugin lists Services, EndpointSlices,
# Namespaces, Pods).
apply_coredns_rbac() {
    kubectl apply -f - >/dev/null <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: lethe-coredns}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: lethe-coredns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: lethe-coredns}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: lethe-coredns}
EOF
}

# Static `local` PersistentVolumes, one directory each, bound by the scheduler.
apply_volumes() {
    local i pv phase
    mkdir -p "$DIR/volumes"
    {
        cat <<'EOF'
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: lethe-local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
EOF
        for i in $(seq 0 $((NVOLUMES - 1))); do
            pv="lethe-local-$i"
            phase="$(kubectl get pv "$pv" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
            if [[ "$phase" == Released || "$phase" == Failed ]]; then
                # Its claim was deleted: wipe it and offer it again.
                kubectl delete pv "$pv" --wait=true >/dev/null
                phase=""
            fi
            [[ -n "$phase" ]] && continue
            rm -rf "${DIR:?}/volumes/$pv"
            mkdir -p "$DIR/volumes/$pv"
            cat <<EOF
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: $pv}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: lethe-local
  local: {path: $DIR/volumes/$pv}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [$NODE]}
EOF
        done
    } | kubectl apply -f - >/dev/null
}

api_ready() { kubectl get --raw /readyz; }
node_ready() {
    [[ "$(kubectl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}
sa_ready() { kubectl get serviceaccount default -n default; }

load_images() {
    local ref
    for ref in pause lethe; do
        # Skip the import when containerd already has this exact image.
        local id
        id="$(cat "$IMAGES/$ref.id" 2>/dev/null || true)"
        if [[ -n "$id" && -f "$DIR/$ref.imported" && "$(cat "$DIR/$ref.imported")" == "$id" ]] &&
            "${CTR[@]}" images ls -q | grep -qx "$(cat "$IMAGES/$ref.ref")"; then
            continue
        fi
        "${CTR[@]}" images import "$IMAGES/$ref.tar" >/dev/null
        printf '%s' "$id" >"$DIR/$ref.imported"
        log "imported $(cat "$IMAGES/$ref.ref") into containerd"
    done
}

up() {
    check_prereqs
    mkdir -p "$DIR/logs"
    if status >/dev/null 2>&1; then
        load_images
        apply_volumes
        log "already running; kubeconfig $KUBECONFIG_OUT"
        echo "$KUBECONFIG_OUT"
        return
    fi
    # Half-up: start over cleanly (state and certificates are kept).
    down_processes
    local start=$SECONDS
    trap 'log "start failed; logs in $DIR/logs"; down_processes' EXIT
    gen_pki
    gen_tokens
    kubeconfig_for admin "$KUBECONFIG_OUT"
    for who in kubelet controller-manager scheduler proxy coredns; do
        kubeconfig_for "$who" "$DIR/$who.kubeconfig"
    done
    setup_bridge
    write_cni
    write_containerd_config
    write_kubelet_config
    write_coredns_config

    start_bg etcd "$BIN/etcd" --name lethe-node --data-dir "$DIR/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "lethe-node=http://127.0.0.1:$ETCD_PEER_PORT" \
        --unsafe-no-fsync --log-level warn
    start_bg kube-apiserver "$BIN/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
        --bind-address "$HOST_IP" --advertise-address "$HOST_IP" --secure-port "$API_PORT" \
        --tls-cert-file "$DIR/pki/apiserver.crt" --tls-private-key-file "$DIR/pki/apiserver.key" \
        --client-ca-file "$DIR/pki/ca.crt" \
        --kubelet-client-certificate "$DIR/pki/kubelet-client.crt" \
        --kubelet-client-key "$DIR/pki/kubelet-client.key" \
        --kubelet-preferred-address-types InternalIP \
        --token-auth-file "$DIR/tokens.csv" \
        --authorization-mode Node,RBAC \
        --enable-admission-plugins NodeRestriction \
        --service-account-issuer "https://kubernetes.default.svc.cluster.local" \
        --service-account-key-file "$DIR/pki/sa.pub" \
        --service-account-signing-key-file "$DIR/pki/sa.key" \
        --api-audiences "https://kubernetes.default.svc.cluster.local" \
        --service-cluster-ip-range "$SVC_CIDR" \
        --cert-dir "$DIR/pki" --profiling=false
    wait_until 120 "API server ready" api_ready
    start_bg kube-controller-manager "$BIN/kube-controller-manager" \
        --kubeconfig "$DIR/controller-manager.kubeconfig" \
        --authentication-kubeconfig "$DIR/controller-manager.kubeconfig" \
        --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port 0 \
        --service-account-private-key-file "$DIR/pki/sa.key" \
        --root-ca-file "$DIR/pki/ca.crt" \
        --use-service-account-credentials=true \
        --cluster-cidr "$POD_CIDR" --service-cluster-ip-range "$SVC_CIDR" \
        --allocate-node-cidrs=false --leader-elect=false
    start_bg kube-scheduler "$BIN/kube-scheduler" \
        --kubeconfig "$DIR/scheduler.kubeconfig" \
        --authentication-kubeconfig "$DIR/scheduler.kubeconfig" \
        --authorization-kubeconfig "$DIR/scheduler.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false
    apply_coredns_rbac
    start_bg coredns "$BIN/coredns" -conf "$DIR/Corefile"
    start_bg containerd containerd --config "$DIR/containerd/config.toml"
    wait_until 60 "containerd answering" "${CTR[@]}" version
    load_images
    start_bg kubelet "$BIN/kubelet" \
        --config "$DIR/kubelet-config.yaml" --kubeconfig "$DIR/kubelet.kubeconfig" \
        --root-dir "$DIR/kubelet" --hostname-override "$NODE" --node-ip "$HOST_IP" \
        --cert-dir "$DIR/kubelet/pki"
    start_bg kube-proxy "$BIN/kube-proxy" \
        --kubeconfig "$DIR/proxy.kubeconfig" --proxy-mode iptables \
        --hostname-override "$NODE" --cluster-cidr "$POD_CIDR" \
        --bind-address "$HOST_IP" --healthz-bind-address "$HOST_IP:10256" \
        --metrics-bind-address "$HOST_IP:10249" --nodeport-addresses "$HOST_IP/32" \
        --conntrack-max-per-core 0
    wait_until 180 "node $NODE Ready" node_ready
    wait_until 60 "the default ServiceAccount" sa_ready
    apply_volumes
    trap - EXIT
    log "ready in $((SECONDS - start))s: API https://$HOST_IP:$API_PORT, pods on $BRIDGE $POD_CIDR"
    log "kubeconfig: $KUBECONFIG_OUT"
    echo "$KUBECONFIG_OUT"
}

# Our mounts: everything under the state dir and the run dir (kubelet volumes,
# containerd's overlay rootfs and shm), deepest first.
unmount_ours() {
    local m
    for _ in 1 2 3; do
        mapfile -t mounts < <(awk '{print $5}' /proc/self/mountinfo |
            grep -E "^($DIR|$RUN_DIR)(/|$)" | sort -r)
        ((${#mounts[@]})) || return 0
        for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    done
}

down_processes() {
    # Pods first, while containerd runs: kill every task of our containerd, so
    # nothing is left running when the shims go.
    if alive_pid containerd >/dev/null; then
        stop_one kubelet 5
        local id
        for id in $("${CTR[@]}" tasks ls -q 2>/dev/null); do
            "${CTR[@]}" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
        done
        for _ in $(seq 50); do
            [[ -z "$("${CTR[@]}" tasks ls -q 2>/dev/null | head -1)" ]] && break
            for id in $("${CTR[@]}" tasks ls -q 2>/dev/null); do
                "${CTR[@]}" tasks delete -f "$id" >/dev/null 2>&1 || true
            done
            sleep 0.2
        done
        for id in $("${CTR[@]}" containers ls -q 2>/dev/null); do
            "${CTR[@]}" containers delete "$id" >/dev/null 2>&1 || true
        done
    fi
    local c
    for c in kube-proxy kubelet coredns kube-scheduler kube-controller-manager containerd kube-apiserver etcd; do
        stop_one "$c" 5
    done
    # Shims of our containerd (their command line names our socket).
    local pid
    for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $CTRD_SOCK" || true); do
        kill -KILL "$pid" 2>/dev/null || true
    done
}

# What kube-proxy --cleanup leaves: the kubelet's own KUBE-FIREWALL and
# KUBE-KUBELET-CANARY chains (filter, nat, mangle; IPv4 and IPv6) and the jumps to
# them. Nothing else on this machine makes KUBE-* chains.
cleanup_kube_chains() {
    local ipt table line chains c
    for ipt in iptables ip6tables; do
        command -v "$ipt" >/dev/null || continue
        for table in filter nat mangle; do
            while read -r line; do
                eval "$ipt -t $table -D ${line#-A }" 2>/dev/null || true
            done < <("$ipt" -t "$table" -S 2>/dev/null | grep -E '^-A [^ ]+ .*-j KUBE-' | grep -vE '^-A KUBE-' || true)
            chains="$("$ipt" -t "$table" -S 2>/dev/null | awk '/^-N KUBE-/{print $2}')"
            for c in $chains; do "$ipt" -t "$table" -F "$c" 2>/dev/null || true; done
            for c in $chains; do "$ipt" -t "$table" -X "$c" 2>/dev/null || true; done
        done
    done
}

down() {
    down_processes
    # Service rules: kube-proxy removes its own chains.
    if [[ -x "$BIN/kube-proxy" ]]; then
        "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
    fi
    cleanup_kube_chains
    unmount_ours
    # Pod network namespaces (containerd names them cni-*; nothing else on this
    # machine runs a CRI runtime) and the bridge, which takes the veths with it.
    local ns
    for ns in /run/netns/cni-*; do
        [[ -e "$ns" ]] || continue
        umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null || true
        rm -f "$ns"
    done
    if ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link del "$BRIDGE"
        log "removed bridge $BRIDGE"
    fi
    rm -rf "$DIR/cni/ipam"
    # Empty pod cgroups the kubelet made (cgroupfs driver).
    find /sys/fs/cgroup/*/kubepods* -depth -type d -exec rmdir {} \; 2>/dev/null || true
    rm -rf "$RUN_DIR"
    # The Docker daemon, if scripts/image.sh started it for the build.
    "$ROOT/scripts/image.sh" docker-down
    log "down"
}

status() {
    local rc=0 c
    for c in "${COMPONENTS[@]}"; do
        alive_pid "$c" >/dev/null || { log "$c: stopped"; rc=1; }
    done
    ((rc == 0)) || return 1
    node_ready || { log "node $NODE not Ready"; return 1; }
    log "node $NODE Ready"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    volumes) apply_volumes ;;
    *) echo "usage: $0 up|down|status|volumes" >&2; exit 2 ;;
esac
