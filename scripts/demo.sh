#!/usr/bin/env bash
# The README's main job on the embedded default. Called by `make demo` (which first runs scripts/setup_env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${DEMO_OUT:-outputs/demo}
mkdir -p "$OUT"
echo "[demo] encoder benchmark of the two micro encoders -> $OUT"
"$PY" benchmarks/encoders.py --only dinov3_micro16,sam2_hiera_micro --repeats 3 --out "$OUT/encoders.json"
echo "[demo] done; outputs in $(cd "$OUT" && pwd)"
