#!/usr/bin/env bash
# A real Kubernetes control plane on loopback: etcd + kube-apiserver, RBAC on,
# an admin token (group system:masters), service-account token signing, TLS
# with a CA of its own. No kubelet, no controller-manager: operator replicas
# run as local processes against it.
#
#   scripts/cluster.sh up       start (idempotent: a running cluster is kept)
#   scripts/cluster.sh down     stop (data stays in the state directory)
#   scripts/cluster.sh status   print state; exit 0 only if the API is ready
#
# Environment (defaults in brackets; tests/fixtures/kube.py sets all of them):
#   LETHE_CLUSTER_DIR      state: certs, tokens, etcd data, logs, pids [.cache/cluster]
#   LETHE_KUBECONFIG       kubeconfig written by `up`                 [.cache/kubeconfig]
#   LETHE_APISERVER_PORT   kube-apiserver secure port                  [16443]
#   LETHE_ETCD_PORT        etcd client port                            [12379]
#   LETHE_ETCD_PEER_PORT   etcd peer port                              [12380]
#   LETHE_BIN_DIR          where build-tools.sh put the binaries       [.cache/bin]
#   LETHE_CLUSTER_OWNER_PID  if set, stop the cluster when that process exits
#                          (a test run killed with SIGKILL leaves nothing behind)
#   LETHE_CLUSTER_TIMEOUT  seconds to wait for /readyz                 [60]
#   LETHE_CLUSTER_CRDS     1: apply crds/ once ready; 0: a bare cluster [1]
#   LETHE_CLUSTER_STOP_GRACE  seconds from SIGTERM to SIGKILL on down  [5]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${LETHE_CLUSTER_DIR:-$ROOT/.cache/cluster}"
KUBECONFIG_OUT="${LETHE_KUBECONFIG:-$ROOT/.cache/kubeconfig}"
API_PORT="${LETHE_APISERVER_PORT:-16443}"
ETCD_PORT="${LETHE_ETCD_PORT:-12379}"
ETCD_PEER_PORT="${LETHE_ETCD_PEER_PORT:-12380}"
BIN="${LETHE_BIN_DIR:-$ROOT/.cache/bin}"
TIMEOUT="${LETHE_CLUSTER_TIMEOUT:-60}"
# Seconds a component gets to exit on SIGTERM before SIGKILL (tests use 0).
STOP_GRACE="${LETHE_CLUSTER_STOP_GRACE:-5}"
HOST=127.0.0.1

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# pid of a component if it is alive and really is that component (pids get reused).
alive_pid() { # name
    local f="$DIR/$1.pid" pid
    [[ -f "$f" ]] || return 1
    pid="$(cat "$f")"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$1" || return 1
    echo "$pid"
}

stop_one() { # name
    local pid
    if pid="$(alive_pid "$1")"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq "$((STOP_GRACE * 10))"); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        log "stopped $1 (pid $pid)"
    fi
    rm -f "$DIR/$1.pid"
}

ready() {
    [[ -f "$DIR/pki/ca.crt" && -f "$DIR/admin.token" && -f "$DIR/apiserver.port" ]] || return 1
    local url token
    url="https://$HOST:$(cat "$DIR/apiserver.port")"
    token="$(cat "$DIR/admin.token")"
    if command -v curl >/dev/null; then
        curl -fsS --max-time 2 --cacert "$DIR/pki/ca.crt" -H "Authorization: Bearer $token" \
            "$url/readyz" >/dev/null 2>&1
    else
        "$BIN/kubectl" --server "$url" --certificate-authority "$DIR/pki/ca.crt" \
            --token "$token" --request-timeout 2s get --raw /readyz >/dev/null 2>&1
    fi
}

port_free() { # port
    ! (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

gen_pki() {
    command -v openssl >/dev/null || die "openssl is required to create the cluster's certificates"
    local pki="$DIR/pki"
    mkdir -p "$pki"
    [[ -f "$pki/apiserver.crt" && -f "$pki/sa.key" ]] && return
    log "creating certificates and keys in $pki"
    (
        cd "$pki"
        # EC P-256 keys: generated instantly, unlike RSA, which matters for test start-up.
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
            -subj "/CN=lethe-local-ca" -keyout ca.key -out ca.crt 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=kube-apiserver" \
            -keyout apiserver.key -out apiserver.csr 2>/dev/null
        printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1" \
            "extendedKeyUsage=serverAuth" >apiserver.ext
        openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
            -days 3650 -extfile apiserver.ext -out apiserver.crt 2>/dev/null
        # Service-account token signing key pair (TokenRequest; tokens are ES256).
        openssl ecparam -name prime256v1 -genkey -noout -out sa.key 2>/dev/null
        openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null
        rm -f apiserver.csr apiserver.ext ca.srl
        chmod 600 ./*.key
    )
}

gen_tokens() {
    [[ -f "$DIR/admin.token" ]] && return
    # Static token file: token,user,uid,"groups". The admin is system:masters,
    # which RBAC always allows; everything else must go through RBAC.
    local token
    token="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
    printf '%s' "$token" >"$DIR/admin.token"
    printf '%s,lethe-admin,lethe-admin,"system:masters"\n' "$token" >"$DIR/tokens.csv"
    chmod 600 "$DIR/admin.token" "$DIR/tokens.csv"
}

write_kubeconfig() {
    mkdir -p "$(dirname "$KUBECONFIG_OUT")"
    local ca tmp="$KUBECONFIG_OUT.tmp.$$"
    ca="$(base64 -w0 <"$DIR/pki/ca.crt")"
    cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: lethe-local
  cluster:
    server: https://$HOST:$API_PORT
    certificate-authority-data: $ca
users:
- name: lethe-admin
  user:
    token: $(cat "$DIR/admin.token")
contexts:
- name: lethe-local
  context:
    cluster: lethe-local
    user: lethe-admin
    namespace: default
current-context: lethe-local
EOF
    chmod 600 "$tmp"
    mv -f "$tmp" "$KUBECONFIG_OUT"
}

# The lethe.io CRDs come with the cluster, so `kubectl apply -f crds/ -f
# manifests/examples/` works in one call (kubectl maps every object's kind
# before creating any, so a CRD and its first objects cannot share a fresh apply).
install_crds() {
    [[ "${LETHE_CLUSTER_CRDS:-1}" == 1 ]] || return 0
    local k=("$BIN/kubectl" --kubeconfig "$KUBECONFIG_OUT")
    "${k[@]}" apply -f "$ROOT/crds/" >/dev/null
    "${k[@]}" wait --for=condition=Established --timeout=60s \
        crd/retentionpolicies.lethe.io crd/cleanupjobs.lethe.io >/dev/null
    local deadline=$((SECONDS + 30))
    # Discovery and the OpenAPI document (kubectl explain) lag behind Established.
    until "${k[@]}" get retentionpolicies,cleanupjobs -A >/dev/null 2>&1 &&
        "${k[@]}" explain retentionpolicy.spec >/dev/null 2>&1 &&
        "${k[@]}" explain cleanupjob.spec >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "lethe.io kinds not served 30s after Established"
        sleep 0.2
    done
    log "CRDs from crds/ installed"
}

start_watchdog() {
    [[ -n "${LETHE_CLUSTER_OWNER_PID:-}" ]] || return 0
    stop_one watchdog
    # Polls the owner; when it is gone, stops the components. Detached so the
    # caller's shell does not wait for it.
    setsid bash -c '
        while kill -0 "$1" 2>/dev/null; do sleep 1; done
        for n in kube-apiserver etcd; do
            p="$(cat "$2/$n.pid" 2>/dev/null)" && kill -KILL "$p" 2>/dev/null
        done
        rm -f "$2"/*.pid
    ' watchdog "$LETHE_CLUSTER_OWNER_PID" "$DIR" </dev/null >/dev/null 2>&1 &
    echo $! >"$DIR/watchdog.pid"
}

up() {
    for b in etcd kube-apiserver kubectl; do
        [[ -x "$BIN/$b" ]] || die "$BIN/$b is missing: run 'make tools' (scripts/build-tools.sh)"
    done
    mkdir -p "$DIR/logs"
    if alive_pid kube-apiserver >/dev/null && alive_pid etcd >/dev/null && ready; then
        write_kubeconfig
        install_crds
        log "already running at https://$HOST:$(cat "$DIR/apiserver.port"); kubeconfig $KUBECONFIG_OUT"
        return
    fi
    # Half-up (one died, or not ready): start over cleanly, keeping the data.
    stop_one kube-apiserver
    stop_one etcd
    for p in "$API_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT"; do
        port_free "$p" || die "port $HOST:$p is in use (set LETHE_APISERVER_PORT / LETHE_ETCD_PORT / LETHE_ETCD_PEER_PORT)"
    done
    gen_pki
    gen_tokens
    # Every write request, by whom: how tests prove followers write nothing (I1).
    cat >"$DIR/audit-policy.yaml" <<'AUDIT'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
AUDIT
    echo "$API_PORT" >"$DIR/apiserver.port"
    # Stop what we started if anything below fails (cleared on success).
    trap 'log "start failed; logs in $DIR/logs"; stop_one kube-apiserver; stop_one etcd' EXIT

    local start=$SECONDS
    # --unsafe-no-fsync: a throwaway local store; fsync only slows tests down.
    setsid "$BIN/etcd" \
        --name lethe --data-dir "$DIR/etcd" \
        --listen-client-urls "http://$HOST:$ETCD_PORT" \
        --advertise-client-urls "http://$HOST:$ETCD_PORT" \
        --listen-peer-urls "http://$HOST:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://$HOST:$ETCD_PEER_PORT" \
        --initial-cluster "lethe=http://$HOST:$ETCD_PEER_PORT" \
        --unsafe-no-fsync --log-level warn \
        </dev/null >"$DIR/logs/etcd.log" 2>&1 &
    echo $! >"$DIR/etcd.pid"

    setsid "$BIN/kube-apiserver" \
        --etcd-servers "http://$HOST:$ETCD_PORT" \
        --bind-address "$HOST" --advertise-address "$HOST" --secure-port "$API_PORT" \
        --tls-cert-file "$DIR/pki/apiserver.crt" --tls-private-key-file "$DIR/pki/apiserver.key" \
        --client-ca-file "$DIR/pki/ca.crt" \
        --token-auth-file "$DIR/tokens.csv" \
        --authorization-mode RBAC \
        --audit-policy-file "$DIR/audit-policy.yaml" --audit-log-path "$DIR/logs/audit.log" \
        --audit-log-format json --audit-log-maxbackup 1 \
        --service-account-issuer "https://kubernetes.default.svc.cluster.local" \
        --service-account-key-file "$DIR/pki/sa.pub" \
        --service-account-signing-key-file "$DIR/pki/sa.key" \
        --api-audiences "https://kubernetes.default.svc.cluster.local" \
        --service-cluster-ip-range 10.0.0.0/24 \
        --disable-admission-plugins ServiceAccount \
        --cert-dir "$DIR/pki" \
        --profiling=false \
        </dev/null >"$DIR/logs/kube-apiserver.log" 2>&1 &
    echo $! >"$DIR/kube-apiserver.pid"
    # No controller-manager runs, so ServiceAccount admission (which waits for
    # the token controller to create "default" SAs) is disabled, as envtest does.

    local deadline=$((SECONDS + TIMEOUT))
    until ready; do
        for n in etcd kube-apiserver; do
            alive_pid "$n" >/dev/null || {
                tail -n 20 "$DIR/logs/$n.log" >&2
                die "$n exited during start-up; see $DIR/logs/$n.log"
            }
        done
        ((SECONDS < deadline)) || die "API server not ready after ${TIMEOUT}s"
        sleep 0.2
    done
    write_kubeconfig
    install_crds
    trap - EXIT
    start_watchdog
    log "ready in $((SECONDS - start))s at https://$HOST:$API_PORT; kubeconfig $KUBECONFIG_OUT"
}

down() {
    stop_one watchdog
    stop_one kube-apiserver
    stop_one etcd
}

status() {
    local rc=0
    for n in etcd kube-apiserver; do
        if pid="$(alive_pid "$n")"; then log "$n: running (pid $pid)"; else log "$n: stopped"; rc=1; fi
    done
    if ready; then log "API: ready at https://$HOST:$(cat "$DIR/apiserver.port")"; else log "API: not ready"; rc=1; fi
    return $rc
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
