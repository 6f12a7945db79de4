#!/usr/bin/env bash
# Render the raw manifests from the Helm chart (called by `make manifests`).
#
#   scripts/render-manifests.sh                  copy crds/*.yaml into charts/lethe/crds/,
#                                                then write manifests/install.yaml
#   scripts/render-manifests.sh --output FILE    render only (no CRD copy) into FILE;
#                                                tests/test_chart.py uses it for the drift test
#
# The output is deterministic: the chart renders with raft.existingSecret=lethe-raft,
# so no generated password is baked in. Users create that Secret themselves
# (docs/install.md):
#   kubectl -n lethe-system create secret generic lethe-raft \
#     --from-literal=password=$(openssl rand -hex 24)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HELM="${HELM:-$ROOT/.cache/bin/helm}"
CHART="$ROOT/charts/lethe"
NAMESPACE=lethe-system
RELEASE=lethe
# .Capabilities.KubeVersion: pinned (not helm's built-in default) so the output
# depends on nothing but the chart.
# shellcheck source=../tools/versions.env
source "$ROOT/tools/versions.env"

out="$ROOT/manifests/install.yaml"
sync_crds=1
while (($#)); do
    case "$1" in
        --output) out="${2:?--output needs a file}"; sync_crds=0; shift 2 ;;
        -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "render-manifests: unknown argument $1" >&2; exit 2 ;;
    esac
done

[[ -x "$HELM" ]] || { echo "render-manifests: $HELM not found: run make tools" >&2; exit 1; }

if ((sync_crds)); then
    compgen -G "$ROOT/crds/*.yaml" >/dev/null || { echo "render-manifests: no crds/*.yaml" >&2; exit 1; }
    mkdir -p "$CHART/crds"
    rm -f "$CHART"/crds/*.yaml
    cp "$ROOT"/crds/*.yaml "$CHART/crds/"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
tmp="$work/install.yaml"
{
    cat <<YAML
# Lethe raw install manifests, rendered from charts/lethe by scripts/render-manifests.sh.
# Do not edit: change the chart and run \`make manifests\`.
#
# Before applying, create the Raft password Secret (docs/install.md):
#   kubectl create namespace $NAMESPACE
#   kubectl -n $NAMESPACE create secret generic lethe-raft --from-literal=password=\$(openssl rand -hex 24)
#   kubectl apply --server-side -f install.yaml
---
apiVersion: v1
kind: Namespace
metadata:
  name: $NAMESPACE
  labels:
    app.kubernetes.io/part-of: lethe
    # The operator's pods meet the restricted Pod Security Standard.
    pod-security.kubernetes.io/enforce: restricted
YAML
    # HOME/XDG point helm at an empty config so no local repositories or
    # plugins influence the output.
    env -u HELM_CONFIG_HOME -u HELM_CACHE_HOME -u HELM_DATA_HOME -u HELM_DRIVER \
        HOME="$work" XDG_CONFIG_HOME="$work/config" XDG_CACHE_HOME="$work/cache" \
        XDG_DATA_HOME="$work/data" \
        "$HELM" template "$RELEASE" "$CHART" \
        --namespace "$NAMESPACE" \
        --include-crds \
        --kube-version "$K8S_VERSION" \
        --set raft.existingSecret=lethe-raft
} >"$tmp"
mkdir -p "$(dirname "$out")"
cat "$tmp" >"$out"
echo "render-manifests: wrote ${out#"$ROOT"/}" >&2
