#!/usr/bin/env bash
# The whole test suite on a fresh machine: install, build the real control plane (cached outside the
# checkout, keyed by version: minutes once, then instant), lint, test. CI runs exactly this (.ci/run).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
bash hack/control-plane.sh build
bash hack/control-plane.sh prometheus >/dev/null  # prometheus + promtool for the metrics tests
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
