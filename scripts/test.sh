#!/usr/bin/env bash
# The whole test suite on a fresh machine: install, build the real control plane and the real node (kubelet,
# kube-scheduler and the images; all cached outside the checkout, keyed by version and by the images' inputs:
# minutes once, then seconds), lint, test. CI runs exactly this (.ci/run).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
bash hack/control-plane.sh build
# kubelet, kube-scheduler, pause and the operator/trainer images for the node tests (-m node); FLOPWISE_SKIP_NODE=1
# skips both the build and those tests.
if [[ ${FLOPWISE_SKIP_NODE:-} != 1 ]]; then bash hack/node.sh all >/dev/null; fi
bash hack/control-plane.sh prometheus >/dev/null  # prometheus + promtool for the metrics tests
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
