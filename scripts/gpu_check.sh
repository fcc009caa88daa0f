#!/usr/bin/env bash
# The population curve on one GPU (issue 17): P = 1, 2, 4, 8, 16, 32 members of full.yaml's
# settings (512 envs, batch 2048, [256, 256], 25 quantiles x 2 critics) in ONE compiled step,
# aggregate and per-member env steps/s, on the first GPU only. Short by design: each P compiles
# once and runs 4 chunks of 100 vectorised steps (about 5-8 minutes in all on an H200).
#   bash scripts/gpu_check.sh            # prints the curve and ends with one JSON line
# Needs a CUDA jaxlib (python -m pip install -e ".[cuda]" or the machine image's jax).
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import jax; print('devices:', jax.devices())"
python scripts/bench.py train --config configs/full.yaml --population 1,2,4,8,16,32 \
    --chunk 100 --chunks 3 --rows 13000 --n-features 16 \
    --set train.devices=1 \
    --set output.progress=false
