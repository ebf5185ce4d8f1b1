#!/usr/bin/env bash
# The obstinate benchmark end to end on one CPU core: the LoRA oracle classifier (if missing), both recipes on the
# first N SST-2 test sentences for every victim, transfer to the other classifiers (the bag-of-words model of
# train_victims.sh is a transfer target only), then the tables. Finished (victim, recipe) runs are kept; a transfer
# target added later is evaluated on their stored examples.
# Victims: the SST-finetuned MiniLM of benchmarks/sst2_finetune (seeds 0 and 1, whole training file) and the MiniLM
# trained on a 3,000-sentence subset (runs/cdt-minilm-sst2); point FULL and SUBSET elsewhere if they live elsewhere.
# Usage: [N=100] bash benchmarks/obstinate/run.sh     (outputs under benchmarks/obstinate/runs/attacks-n<N>)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=${SSTKIT_RUNS:-benchmarks/obstinate/runs}
FULL=${FULL:-benchmarks/sst2_finetune/runs/sst2_finetune_full}
SUBSET=${SUBSET:-runs/cdt-minilm-sst2}
lora=$ROOT/obstinate-lora-sst2/seed1/checkpoints/last.ckpt
bow=$ROOT/obstinate-bow-sst2/seed0/checkpoints/last.ckpt
[[ -f $lora ]] || bash benchmarks/obstinate/train_victims.sh lora
[[ -f $bow ]] || bash benchmarks/obstinate/train_victims.sh bow
python benchmarks/obstinate/run.py --n "${N:-100}" --root "$ROOT/attacks-n${N:-100}" \
  --victim "minilm-full-s0=$FULL/seed0/checkpoints/last.ckpt" "minilm-full-s1=$FULL/seed1/checkpoints/last.ckpt" \
           "minilm-3k-s0=$SUBSET/seed0/checkpoints/last.ckpt" \
  --oracle-model "lora-1.5k-s1=$lora" --transfer "bow-s0=$bow"
