#!/usr/bin/env bash
# The main job on a fresh machine: install, prepare the corpus, run the quickstart campaign, write its report.
# Run it again to see the result (it resumes the finished campaign); delete flopwise-state/ to start over.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh local
if [ ! -f flopwise-data/stdlib/meta.json ]; then
  .venv/bin/flopwise data stdlib flopwise-data/stdlib
fi
state=flopwise-state/quickstart
resume=()
[ -f "$state/status.json" ] && resume=(--resume)
exec .venv/bin/flopwise run examples/quickstart.yaml --state-dir "$state" "${resume[@]}"
