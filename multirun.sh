#!/usr/bin/env bash
# A real sweep: every optimizer in OPTIMIZERS x every task in TASKS on the configured model
# (default: the embedded SmolLM2-135M), then a score table + plot of the sweep.
#   ./multirun.sh                                  # defaults below
#   OPTIMIZERS=none,gepa TASKS=lora ./multirun.sh model.max_tokens=256
#   ./multirun.sh hydra/launcher=parallel          # run jobs in parallel processes (docs/sweeps.md)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OPTIMIZERS=${OPTIMIZERS:-none,labeled_fewshot,bootstrap_fewshot,mipro_v2,gepa}
TASKS=${TASKS:-sentiment,lora,federated}
SWEEP_DIR=${SWEEP_DIR:-outputs/multirun/$(date +%Y-%m-%d_%H-%M-%S)}

"$PY" -m runner -m "optimizer=$OPTIMIZERS" "task=$TASKS" "hydra.sweep.dir=$SWEEP_DIR" "$@"
"$PY" -m runner.report "$SWEEP_DIR"
