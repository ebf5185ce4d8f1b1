#!/usr/bin/env bash
# The benchmark's victim: packaged MiniLM fine-tuned on a seeded 2,000-sentence subset of SST-2 train (CPU-sized;
# the issue asks for the full foundation model, which no run on this machine had produced).
# Usage: bash benchmarks/attacks/train_victim.sh [seed]   -> $ROOT/attack-victim-sst2/seed<seed>/checkpoints/last.ckpt
set -euo pipefail
cd "$(dirname "$0")/../.."
SEED=${1:-0}
ROOT=${SSTKIT_RUNS:-benchmarks/attacks/runs}
SSTKIT=${SSTKIT:-sstkit}
"$SSTKIT" fit --config configs/bert/sst2/finetune.yaml --name attack-victim-sst2 --run_root "$ROOT" \
  --seed_everything "$SEED" --data.init_args.limit_train_samples 2000 --data.init_args.max_length 48 \
  --trainer.max_epochs 2 --model.init_args.lr 1.0e-4 --trainer.limit_val_batches 0 --trainer.logger false
