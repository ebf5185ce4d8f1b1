#!/usr/bin/env bash
# Reruns the CD-T benchmark (CPU, one core each; see README.md). Writes local_sst2.{md,csv,json} and
# circuits.{md,csv,json} next to this script.
#   bash benchmarks/cdt/run.sh            # both parts; MODEL names the fine-tuned SST-2 classifier
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
RUNS=${SSTKIT_RUNS:-runs}
MODEL=${MODEL:-$RUNS/cdt-minilm-sst2/seed0/checkpoints/last.ckpt}
if [ ! -f "$MODEL" ]; then
  # the victim: MiniLM fine-tuned on 3000 SST-2 sentences for one epoch (~30 min on one busy core)
  sstkit fit --config configs/bert/sst2/finetune.yaml --name cdt-minilm-sst2 --run_root "$RUNS" \
    --data.init_args.limit_train_samples 3000 --data.init_args.limit_eval_samples 300 \
    --data.init_args.max_length 48 --model.init_args.lr 1e-4 --trainer.val_check_interval 1.0
fi
python benchmarks/cdt/local.py --model "$MODEL" --dataset sst2 --limit "${LIMIT:-60}" --samples 64 --ig-steps 16 \
  --out benchmarks/cdt/local_sst2
python benchmarks/cdt/circuits.py --steps "${STEPS:-3000}" --lr 3e-3 --cache "$RUNS/cdt_induction" \
  --out benchmarks/cdt/circuits
