#!/usr/bin/env bash
# The README's main job on the embedded default (called by `make demo` after scripts/setup_env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
exec "$PY" tools/demo.py --out "${DEMO_OUT:-outputs/demo}" "$@"
