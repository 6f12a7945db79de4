#!/usr/bin/env bash
# Build kube-apiserver, kubectl, etcd and helm from the Go module proxy into
# .cache/bin/, pinned by tools/versions.env. With --node, also what the test
# node cluster (scripts/node-cluster.sh) runs: kubelet, kube-controller-manager,
# kube-scheduler, kube-proxy (same pinned k8s.io/kubernetes) and CoreDNS.
# A binary is rebuilt only when its stamp (version + go.mod/go.sum hash + Go
# version) changes, so a warm run is about a second. Builds run one after
# another: CI machines have 2 cores and the Kubernetes build alone saturates them.
set -euo pipefail

NODE=0
case "${1:-}" in
    "") ;;
    --node) NODE=1 ;;
    *) echo "usage: $0 [--node]" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${LETHE_BIN_DIR:-$ROOT/.cache/bin}"
# shellcheck source=../tools/versions.env
source "$ROOT/tools/versions.env"

log() { printf '[build-tools] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Find Go: PATH first, then the usual install location.
if ! command -v go >/dev/null 2>&1; then
    [[ -x /usr/local/go/bin/go ]] || die "Go >= $GO_MIN_VERSION is required (https://go.dev/dl/)"
    export PATH="/usr/local/go/bin:$PATH"
fi
# Never download another toolchain behind our back; the go.mod "go" lines
# state the minimum and a too-old Go fails clearly below.
export GOTOOLCHAIN=local
# go.sum files are committed and complete: no module may change, and no
# checksum-database lookup is needed (some CI networks only reach the proxy).
export GOFLAGS="-mod=readonly -buildvcs=false"

GO_VERSION="$(go env GOVERSION)"
min_minor="${GO_MIN_VERSION#1.}"
have_minor="$(sed -E 's/^go1\.([0-9]+).*/\1/' <<<"$GO_VERSION")"
((have_minor >= min_minor)) || die "$GO_VERSION is too old; need go$GO_MIN_VERSION or newer"

# The go.mod files must pin what versions.env says (one source of truth).
check_pin() { # module-dir module version
    grep -Eq "^[[:space:]]*(require )?$2 $3( |$)" "$ROOT/tools/$1/go.mod" \
        || die "tools/$1/go.mod does not require $2 $3 (tools/versions.env)"
}
check_pin k8s k8s.io/kubernetes "$K8S_VERSION"
check_pin etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
check_pin helm helm.sh/helm/v3 "$HELM_VERSION"
check_pin coredns github.com/coredns/coredns "$COREDNS_VERSION"
if grep -E '=> k8s.io/[a-z-]+ v' "$ROOT/tools/k8s/go.mod" | grep -vq " $K8S_STAGING_VERSION\$"; then
    die "tools/k8s/go.mod replaces a staging module with a version other than $K8S_STAGING_VERSION"
fi

mkdir -p "$BIN"
total_start=$SECONDS

build() { # name module-dir package version [extra ldflags...]
    local name=$1 dir=$2 pkg=$3 version=$4
    shift 4
    local stamp_file="$BIN/.$name.stamp" stamp
    stamp="$version $GO_VERSION $(cat "$ROOT/tools/$dir/go.mod" "$ROOT/tools/$dir/go.sum" | sha256sum | cut -c1-16)"
    if [[ -x "$BIN/$name" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]]; then
        log "$name $version: up to date"
        return
    fi
    log "$name $version: building"
    [[ $name != kube-apiserver ]] || log "(a cold Kubernetes build takes 10-20 minutes on 2 cores)"
    local start=$SECONDS
    rm -f "$stamp_file"
    (cd "$ROOT/tools/$dir" &&
        go build -trimpath -ldflags="-s -w $*" -o "$BIN/$name.tmp.$$" "$pkg")
    mv -f "$BIN/$name.tmp.$$" "$BIN/$name"
    printf '%s' "$stamp" >"$stamp_file"
    log "$name $version: built in $((SECONDS - start))s"
}

# Version stamps as the upstream release build sets them (kubectl version,
# /version, helm version); without them they read v0.0.0-master.
k8s_minor="$(cut -d. -f2 <<<"$K8S_VERSION")"
k8s_ldflags=()
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldflags+=("-X=$p.gitVersion=$K8S_VERSION" "-X=$p.gitMajor=1" "-X=$p.gitMinor=$k8s_minor"
        "-X=$p.gitTreeState=clean")
done

build etcd etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
build kube-apiserver k8s k8s.io/kubernetes/cmd/kube-apiserver "$K8S_VERSION" "${k8s_ldflags[@]}"
build kubectl k8s k8s.io/kubernetes/cmd/kubectl "$K8S_VERSION" "${k8s_ldflags[@]}"
build helm helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" \
    "-X=helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
if ((NODE)); then
    for cmd in kubelet kube-controller-manager kube-scheduler kube-proxy; do
        build "$cmd" k8s "k8s.io/kubernetes/cmd/$cmd" "$K8S_VERSION" "${k8s_ldflags[@]}"
    done
    build coredns coredns lethe.io/tools/coredns "$COREDNS_VERSION" \
        "-X=github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
fi

log "all tools ready in $BIN ($((SECONDS - total_start))s)"
