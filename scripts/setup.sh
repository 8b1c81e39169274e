#!/usr/bin/env bash
# Creates .venv and installs flopwise with the extras named in $1 (default: local). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-local}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
# torch is pinned to 2.13.0 in the extras: any other version pulls gigabytes of CUDA wheels.
.venv/bin/pip install -q -e ".[${extras}]"
