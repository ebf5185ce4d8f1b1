#!/usr/bin/env bash
# The attacks' masked LM: fit configs/bert/mlm/minilm_mlm.yaml, test it on held-out SST-2 test text, test the same
# model with its untrained head as the baseline row, and rebuild the fill-mask table (benchmarks/attacks/mlm.md).
# Usage: bash benchmarks/attacks/train_mlm.sh          (runs under $SSTKIT_RUNS, default benchmarks/attacks/runs)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=${SSTKIT_RUNS:-benchmarks/attacks/runs}
SSTKIT=${SSTKIT:-sstkit}
CFG=configs/bert/mlm/minilm_mlm.yaml
ckpt=$ROOT/minilm-mlm/seed0/checkpoints/last.ckpt
[[ -f $ckpt ]] || "$SSTKIT" fit --config $CFG --run_root "$ROOT" --trainer.logger false
"$SSTKIT" test --config $CFG --run_root "$ROOT" --trainer.logger false --ckpt_path "$ckpt"
"$SSTKIT" test --config $CFG --run_root "$ROOT" --trainer.logger false --name minilm-mlm-untrained-head
SSTKIT_RUNS=$ROOT "$SSTKIT" table benchmarks/attacks/spec_mlm.yaml
