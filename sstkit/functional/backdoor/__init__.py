"""Expose Before You Defend (EBYD) for text classifiers: one import for the exposure, scan and removal cores.

The pipeline on a possibly backdoored classifier f and a small clean defense set D:

1. expose: :func:`clean_unlearning` (gradient ascent on D's clean loss until predictions collapse) or
   :func:`random_label_finetune`;
2. detect: :func:`scan_triggers` on the exposed model (HotFlip-style whole-vocabulary scan, flip-rate verified):
   backdoor label, recovered trigger, and the model's backdoor score;
3. remove: :func:`unlearn_trigger` on the original model, or :class:`NeuronMasks` + :func:`learn_masks` on the
   exposed model and :func:`prune_units` on the original.

Example:
    >>> exposed = copy.deepcopy(model)
    >>> result = clean_unlearning(exposed, defense, num_labels=2, lr=1e-5)
    >>> scan = scan_triggers(exposed, defense, num_labels=2, allowed=vocabulary_mask(tokenizer))
    >>> unlearn_trigger(model, defense, [[scan.best.token_id]])
"""

from __future__ import annotations

from sstkit.functional.backdoor.common import (
    PredictionStats,
    attack_success_counts,
    attack_success_rate,
    insert_tokens,
    predict,
    prediction_stats,
    select_rows,
)
from sstkit.functional.backdoor.exposure import ExposureResult, StopRule, clean_unlearning, random_label_finetune
from sstkit.functional.backdoor.removal import NeuronMasks, Unit, learn_masks, prune_units, unlearn_trigger
from sstkit.functional.backdoor.scan import (
    Candidate,
    LabelScan,
    ScanResult,
    flip_rate,
    scan_label,
    scan_triggers,
    token_rank,
    vocabulary_mask,
)

__all__ = [
    "Candidate", "ExposureResult", "LabelScan", "NeuronMasks", "PredictionStats", "ScanResult", "StopRule", "Unit",
    "attack_success_counts", "attack_success_rate", "clean_unlearning", "flip_rate", "insert_tokens", "learn_masks", "predict",
    "prediction_stats", "prune_units", "random_label_finetune", "scan_label", "scan_triggers", "select_rows",
    "token_rank", "unlearn_trigger", "vocabulary_mask",
]
