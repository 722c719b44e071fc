#!/usr/bin/env bash
# GPU truth in one command: the GPU tests, then the GPU benchmarks; one summary table at the end,
# JSON results under OUT_DIR (see bench/gpu_check.py for the steps).
#
#   bench/gpu_check.sh OUT_DIR                 # on a machine with a CUDA GPU (< 8 min on one H100/H200)
#   bench/gpu_check.sh OUT_DIR --cpu-dry-run   # anywhere: the same code paths on the CPU at toy sizes (CI)
#   bench/gpu_check.sh OUT_DIR --steps tests,contracam   # a subset
#
# Environment: the project's own setup (./run setup -> .venv). Set OCCON_PYTHON to an interpreter that
# already has the requirements (e.g. a GPU image without PyPI access) to skip the setup; steps whose
# optional parts are missing there (DALI, solo-learn) are reported as skipped, with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  echo "usage: bench/gpu_check.sh OUT_DIR [--cpu-dry-run] [--steps a,b,...]" >&2
  exit 2
fi
OUT=$1; shift
if [ -n "${OCCON_PYTHON:-}" ]; then
  PY=$OCCON_PYTHON
else
  ./run setup
  PY=.venv/bin/python
fi
mkdir -p "$OUT"
exec "$PY" bench/gpu_check.py --out "$OUT" "$@"
