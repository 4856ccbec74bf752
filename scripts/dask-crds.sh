#!/usr/bin/env bash
# Refresh deploy/kubernetes/crds/ from the dask-kubernetes wheel: the Dask operator's CRDs
# (DaskCluster, DaskAutoscaler) that tests/unit/test_kubernetes_manifests.py validates our
# manifests against. Vendored rather than a dev dependency: the wheel pulls in kopf, kr8s
# and two Kubernetes clients just to ship these YAML files.
#
#   bash scripts/dask-crds.sh [VERSION]    (default: the version noted in the files now)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$REPO/deploy/kubernetes/crds"
CURRENT="$(sed -n 's/^# Source: dask-kubernetes \([^ ]*\) .*/\1/p' "$OUT/daskcluster.yaml" 2>/dev/null | head -n1 || true)"
VERSION="${1:-${CURRENT:-2026.3.0}}"
PY="${PYTHON:-$REPO/.venv/bin/python}"
[[ -x "$PY" ]] || PY=python3
WHEEL_DIR="$(mktemp -d)"
trap 'rm -rf "$WHEEL_DIR"' EXIT

"$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEEL_DIR" "dask-kubernetes==$VERSION"
WHEEL="$(ls "$WHEEL_DIR"/dask_kubernetes-*.whl)"
INNER=dask_kubernetes/operator/deployment/helm/dask-kubernetes-operator/crds
mkdir -p "$OUT"
for crd in daskcluster daskautoscaler; do
    {
        echo "# Source: dask-kubernetes $VERSION (PyPI wheel), $INNER/$crd.yaml"
        echo "# Vendored unchanged by scripts/dask-crds.sh; the operator's Helm chart installs it."
        unzip -p "$WHEEL" "$INNER/$crd.yaml"
    } >"$OUT/$crd.yaml"
done
echo "dask-crds.sh: wrote $OUT/{daskcluster,daskautoscaler}.yaml from dask-kubernetes $VERSION" >&2
