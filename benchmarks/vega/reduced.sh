#!/usr/bin/env bash
# The committed results.md at its reduced scale (2,000 training sentences, 63 steps, 872 test sentences), in the
# order the CPU budget allowed: see README.md for what finished. Each line skips runs that already finished, so the
# script resumes; run from the repository root with SSTKIT_DATA set. Seed 0 of freelb, smart, self_calibration and
# transductive comes from the earlier run (records recovered by seed0_records.py).
set -u
RUN="python benchmarks/vega/run.py --train-samples 2000 --transductive-threshold 0.7 --rtd-pretrain-samples 2560"
$RUN --seeds 0 --arms baseline rtd_simcse                       # RTD + SimCSE pretraining (80 steps), then seed 0
$RUN --seeds 1 --arms baseline smart freelb                     # a second seed of the baseline and the two perturbations
$RUN --seeds 0 1 --arms baseline smart_self_calibration         # the stack
$RUN --seeds 2 --arms baseline smart freelb smart_self_calibration
$RUN --seeds 1 2 --arms baseline rtd_simcse
