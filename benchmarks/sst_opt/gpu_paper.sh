#!/usr/bin/env bash
# --scale paper of benchmarks/sst_opt on one GPU: full rank, LoRA, SST and GaLore at OPT-125M's shape (d = 768,
# 12 layers, r = 64 = d/12, bf16 autocast, 32 × 256 tokens a step), seed 0, STEPS steps each, one after another
# (so the peak-memory numbers do not share the GPU). Writes benchmarks/sst_opt/paper/results.md (tokens/s,
# torch.cuda.max_memory_allocated, held-out perplexity, ratios to full beside the SST paper's OPT-1.3B ratios)
# and packs the run records into OUTDIR/results.tgz.
#
# Usage (repository root, sstkit installed, SSTKIT_DATA set):
#   bash benchmarks/sst_opt/gpu_paper.sh OUTDIR [STEPS=300] [SECONDS_PER_ARM=150]
# Learning rates: LR_FULL, LR_LORA, LR_SST, LR_GALORE (defaults: the CPU-scale sweep's choices; the paper's
# OPT-125M runs are not tuned here). About 10 minutes on an H200 with the defaults, BPE training included.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUTDIR=$(mkdir -p "$1" && cd "$1" && pwd); STEPS=${2:-300}; BUDGET=${3:-150}
PY=${PYTHON:-python3}
export OMP_NUM_THREADS=4 PYTHONUNBUFFERED=1 WANDB_MODE=${WANDB_MODE:-offline}
LR=(full="${LR_FULL:-3e-3}" lora="${LR_LORA:-1e-2}" sst="${LR_SST:-1e-2}" galore="${LR_GALORE:-1e-2}")
RUNS=benchmarks/sst_opt/runs
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUTDIR/gpu.txt" 2>&1
# The BPE is trained once, on CPU, before the timed arms (a 1-step run of the full arm).
"$PY" benchmarks/sst_opt/run.py --scale paper --arms full --lr "${LR[0]}" --steps 1 --seeds 0 --train-only \
  --runs /tmp/sst_opt_paper_warmup > "$OUTDIR/warmup.log" 2>&1
for arm in full lora sst galore; do
  for item in "${LR[@]}"; do [[ ${item%%=*} == "$arm" ]] && lr=$item; done
  timeout "$BUDGET" "$PY" benchmarks/sst_opt/run.py --scale paper --arms "$arm" --lr "$lr" --steps "$STEPS" \
    --seeds 0 --train-only --runs "$RUNS" > "$OUTDIR/$arm.log" 2>&1 || echo "$arm: exit $?" >> "$OUTDIR/gpu.txt"
done
"$PY" benchmarks/sst_opt/run.py --scale paper --arms full lora sst galore --seeds 0 --runs "$RUNS" --no-train \
  --lr "${LR[@]}" > "$OUTDIR/report.log" 2>&1
cp benchmarks/sst_opt/paper/results.md "$OUTDIR/" 2>/dev/null
find "$RUNS" -path '*sst_opt_paper-*' -name summary.json > "$OUTDIR/files.txt"
tar czf "$OUTDIR/results.tgz" -T "$OUTDIR/files.txt" benchmarks/sst_opt/paper 2>/dev/null
cat "$OUTDIR/gpu.txt"; tail -n 12 "$OUTDIR/report.log"
