#!/usr/bin/env bash
# The GPU figures owed (issues 17, 25 and 43), on one lent GPU, in stages (STAGES, default all,
# ~20 minutes). A device call is capped at 10 minutes and a session's device time at 15 with
# the machine's start, so one session runs STAGES="cost critics" (~4 min) then STAGES=curve
# (~5 min), and the walk-forward (STAGES=wfo, ~10 min) needs a session of its own:
#   cost:    `bench cost` of full.yaml's step at P = 1 and 32: the GPU compiler's own FLOPs,
#            bytes, kernels and conditionals per member-iteration (about 1 minute);
#   curve:   the population curve: P = 1, 4, 16, 64 members of full.yaml's step (512 envs,
#            batch 2048, [256, 256], 25 quantiles x 2 critics) in ONE compiled step: aggregate
#            and per-member env steps/s, compile time, peak GPU memory (3 chunks of 100
#            vectorised steps per P; about 5 minutes);
#   critics: the CPU's forms on the GPU, one at a time, against the GPU's defaults (the
#            critics per critic, not batched: networks.critic_form; the parameters as trees,
#            not flat: trainer.step_params_form) at P = 1 and 16, the check of those choices
#            (about 3 minutes);
#   wfo:     full.yaml end to end with 8 seeds and K = 4 segments in one batch
#            (wfo.segments_per_batch=4: fits, MAE, training at the original 30M env steps per
#            agent, backtests, report), its summary.md and metrics.csv kept under $OUT/full_k4;
#            with SEQUENTIAL=1, the same 4 segments one at a time (the batched / sequential
#            ratio).
#   OUT=/some/dir STAGES="cost curve" bash scripts/gpu_check.sh   # results under $OUT
# Needs a CUDA jaxlib (python -m pip install -e ".[cuda]" or the machine image's jax).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
python -c "import jax; print('devices:', jax.devices()); print('jax', jax.__version__)"
git rev-parse HEAD 2>/dev/null | sed 's/^/commit: /'
STAGES=${STAGES:-cost curve critics wfo}
stage() { case " $STAGES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
if stage cost; then
    for p in 1 32; do
        SECONDS=0
        timeout 240 python scripts/bench.py cost --config configs/full.yaml --population $p \
            --top 20 2>&1 | tee "$OUT/cost_p$p.txt"
        echo "bench cost P = $p: ${SECONDS} s"
    done
fi
if stage curve; then
    SECONDS=0
    timeout 540 python scripts/bench.py train --config configs/full.yaml --population 1,4,16,64 \
        --chunk 100 --chunks 3 --rows 13000 --n-features 16 \
        --set train.devices=1 --set output.progress=false 2>&1 | tee "$OUT/population.txt"
    echo "population curve: ${SECONDS} s"
fi
if stage critics; then  # the CPU's forms on the GPU: per-critic matmuls, parameter trees
    for form in "--critics per-critic" "--params tree"; do
        SECONDS=0
        timeout 200 python scripts/bench.py train --config configs/full.yaml --population 16 \
            $form --chunk 100 --chunks 3 --rows 13000 --n-features 16 \
            --set train.devices=1 --set output.progress=false 2>&1 \
            | tee "$OUT/form_${form##* }.txt"
        echo "$form, P = 1 and 16 (the curve's P = 1 and 16 are the GPU's default form): ${SECONDS} s"
    done
fi
stage wfo || exit 0
SECONDS=0
timeout 570 python scripts/wfo.py --config configs/full.yaml --out "$OUT" \
    --set run_name=full_k4 --set wfo.max_segments=4 --set wfo.segments_per_batch=4 \
    --set train.devices=1 --set output.progress=false --set output.tensorboard=false \
    2>&1 | tail -n 40 | tee "$OUT/full_k4.txt"
echo "full.yaml, 4 segments x 8 seeds in one batch, end to end: ${SECONDS} s" \
    | tee -a "$OUT/full_k4.txt"
python - "$OUT/full_k4" <<'PY' 2>&1 | tee -a "$OUT/full_k4.txt"
import json, sys, pathlib
run = pathlib.Path(sys.argv[1])
for k in range(4):
    done = run / f"segment_{k}" / "DONE"
    if done.is_file():
        t = json.loads(done.read_text())["timings"]
        print(f"segment {k}:", {key: round(v, 1) for key, v in t.items()
                                if isinstance(v, (int, float))})
PY
if [ "${SEQUENTIAL:-0}" = 1 ]; then
    SECONDS=0
    timeout 570 python scripts/wfo.py --config configs/full.yaml --out "$OUT" \
        --set run_name=full_seq --set wfo.max_segments=4 --set wfo.segments_per_batch=1 \
        --set train.devices=1 --set output.progress=false --set output.tensorboard=false \
        2>&1 | tail -n 20 | tee "$OUT/full_seq.txt"
    echo "full.yaml, the same 4 segments one at a time: ${SECONDS} s" | tee -a "$OUT/full_seq.txt"
fi
