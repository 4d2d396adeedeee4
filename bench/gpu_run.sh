#!/usr/bin/env bash
# One prepared GPU session (train, test, time, serve, bring back): the steps, budgets and outputs are
# described at the top of bench/gpu_run.py, which this runs.
#   here, once:          .venv/bin/python -m bench.gpu_run pack        # -> .gpu/ (data and the app's packages)
#   on the GPU machine:  bash bench/gpu_run.sh                         # carry [".gpu"]; results under $OUT
#   rehearsal on a CPU:  bash bench/gpu_run.sh --tiny --out /tmp/gpu-tiny [--data DIR]
# Settings are environment variables (TINY=1, TRAIN_MIN, BUDGET_S, FROM_SCRATCH=1, ...) or flags.
set -eu
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
exec "$PY" -m bench.gpu_run "$@"
