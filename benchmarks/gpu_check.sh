#!/usr/bin/env bash
# One prepared GPU measurement for a machine with a GPU and no internet (make bench-gpu), <= 8 minutes:
# train step (stage 1 and stage 3) at 224 px in float32 and bfloat16 at the largest batch that fits,
# images/s and MFU, the PyTorch reference where torch is installed, and the data pipeline's keep-up.
# Prints tables; writes $OUT/gpu_check.json when OUT is set. Installs nothing from the network: it uses
# .venv (or PYTHON) when JAX imports there, else builds a venv from a wheels folder (WHEELS, or
# ./wheels, or shared/wheels) with pip --no-index. Extra arguments go to benchmarks/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."

has_jax() { "$1" -c "import jax, flax, optax, grain, tensorflow_datasets" >/dev/null 2>&1; }

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for candidate in .venv/bin/python python3; do
    if command -v "$candidate" >/dev/null 2>&1 && has_jax "$candidate"; then PY="$candidate"; break; fi
  done
fi
if [ -z "$PY" ]; then
  WHEELS="${WHEELS:-$( [ -d wheels ] && echo wheels || echo shared/wheels )}"
  if [ ! -d "$WHEELS" ]; then
    echo "gpu_check: no Python with JAX found and no wheels folder ($WHEELS); set PYTHON or WHEELS" >&2
    exit 2
  fi
  VENV="${TMPDIR:-/tmp}/handprop-gpu-venv"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --no-index --find-links "$WHEELS" -e '.[cuda]' \
    || "$VENV/bin/pip" install -q --no-index --find-links "$WHEELS" -e .
  "$VENV/bin/pip" install -q --no-index --find-links "$WHEELS" torch 2>/dev/null || true  # optional
  PY="$VENV/bin/python"
fi
"$PY" -c "import jax; print('python', __import__('sys').executable, '| backend', jax.default_backend())"

ARGS=()
[ -n "${OUT:-}" ] && ARGS+=(--json "$OUT/gpu_check.json")
# the measurement stops growing batches after --budget-s (420 s); the hard stop is 8 minutes
exec timeout 480 "$PY" benchmarks/gpu_check.py "${ARGS[@]}" "$@"
