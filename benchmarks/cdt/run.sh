#!/usr/bin/env bash
# Reruns the CD-T benchmark (CPU, one core each; see README.md). Writes next to this script:
#   local_sst2.{md,csv,json}, local_agnews.{md,csv,json}   local explanations
#   circuits.{md,csv,json}                                  planted induction circuit (+ timing on wider OPTs)
#   circuits_positions.{md,csv,json}                        the planted model, heads and heads at positions
#   circuits_learned.{md,csv,json}                          induction circuit learned by all heads (heads + positions)
# Overridable: MODEL (SST-2 classifier), AGNEWS_MODEL (AG News classifier), LIMIT / AGNEWS_LIMIT (sentences),
# STEPS (planted induction steps), PART (all | local | circuits), SSTKIT_RUNS (where runs and caches go).
#   bash benchmarks/cdt/run.sh
#   AGNEWS_MODEL=runs/agnews-minilm/seed0/checkpoints/last.ckpt PART=local bash benchmarks/cdt/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
RUNS=${SSTKIT_RUNS:-runs}
MODEL=${MODEL:-$RUNS/cdt-minilm-sst2/seed0/checkpoints/last.ckpt}
AGNEWS_MODEL=${AGNEWS_MODEL:-$RUNS/agnews-minilm/seed0/checkpoints/last.ckpt}
PART=${PART:-all}
if [ "$PART" != circuits ]; then
  if [ ! -f "$MODEL" ]; then
    # the SST-2 victim: MiniLM fine-tuned on 3000 SST-2 sentences for one epoch (~30 min on one busy core)
    sstkit fit --config configs/bert/sst2/finetune.yaml --name cdt-minilm-sst2 --run_root "$RUNS" \
      --data.init_args.limit_train_samples 3000 --data.init_args.limit_eval_samples 300 \
      --data.init_args.max_length 48 --model.init_args.lr 1e-4 --trainer.val_check_interval 1.0
  fi
  if [ ! -f "$AGNEWS_MODEL" ]; then
    # the AG News victim: MiniLM fine-tuned on 2000 AG News sentences for two epochs, max_length 64
    sstkit fit --config configs/bert/agnews/finetune.yaml --name agnews-minilm --run_root "$RUNS" \
      --data.init_args.limit_train_samples 2000 --data.init_args.max_length 64 --model.init_args.lr 1e-4 \
      --trainer.max_epochs 2 --trainer.limit_val_batches 0
  fi
  python benchmarks/cdt/local.py --model "$MODEL" --dataset sst2 --limit "${LIMIT:-100}" --samples 64 --ig-steps 16 \
    --out benchmarks/cdt/local_sst2
  python benchmarks/cdt/local.py --model "$AGNEWS_MODEL" --dataset agnews --limit "${AGNEWS_LIMIT:-30}" --samples 64 \
    --ig-steps 16 --out benchmarks/cdt/local_agnews
fi
if [ "$PART" != local ]; then
  python benchmarks/cdt/circuits.py --steps "${STEPS:-3000}" --lr 3e-3 --cache "$RUNS/cdt_induction" \
    --out benchmarks/cdt/circuits
  # the same planted model (cached) with position-resolved nodes (layer, head, position) too
  python benchmarks/cdt/circuits.py --steps "${STEPS:-3000}" --lr 3e-3 --positions --timing-layers \
    --cache "$RUNS/cdt_induction" --out benchmarks/cdt/circuits_positions
  # all heads trainable, attention-only, random gaps between the copies; truth = the smallest head set keeping 90 %
  python benchmarks/cdt/circuits.py --circuit all --truth search --attn-only --gaps --steps 4000 --lr 3e-3 \
    --length 25 --vocab 48 --min-half 4 --positions --timing-layers --cache "$RUNS/cdt_induction" \
    --out benchmarks/cdt/circuits_learned
fi
