"""The method settings table: every method callback (and optimizer wrapper) joins it, so the generic tests train
it for two batches, resume it exactly and run it under DDP on the same model families.

Add one line per method:

    "SparseSpectralTraining": MethodSetting(family="text", init_args={"rank": 4, "steps_per_iteration": 2}),

``family`` picks a tiny config from ``FAMILIES`` in conftest.py (``text`` is a 1-layer random BERT on SST-2).
``config`` is merged into that config (e.g. ``{"optimizer": {...}}`` for optimizer wrappers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MethodSetting:
    """How the generic tests run one method."""

    family: str = "text"
    init_args: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    kind: str = "callback"  # or "optimizer" for wrappers injected via LightningCLI's optimizer arguments
    logs: tuple[str, ...] = ()  # metrics the method must log in these tiny runs (the generic tests check them)


METHOD_SETTINGS: dict[str, MethodSetting] = {}
# T3 = 2 and T2 = 2: within the 6-step resume test SST resamples at steps 2, 4, 6 and re-decomposes at step 4.
METHOD_SETTINGS["SparseSpectralTraining"] = MethodSetting(init_args={"rank": 4, "steps_per_iteration": 2, "warmup_steps": 2, "iterations_per_round": 2})
METHOD_SETTINGS["LoRA"] = MethodSetting(init_args={"rank": 4, "alpha": 8, "dropout": 0.1})
# Restarts at steps 2, 4, 6 of the resume test, each followed by a 2-step LR re-warm-up.
METHOD_SETTINGS["ReLoRA"] = MethodSetting(init_args={"rank": 4, "alpha": 8, "merge_every": 2, "restart_warmup_steps": 2})
METHOD_SETTINGS["HessianQuantization"] = MethodSetting(init_args={"bits": "2/3", "num_groups": 4, "hessian_batches": 1, "num_subsets": 2, "max_iter": 3, "blocks": ["encoder.encoder.layer.0", "encoder.embeddings"]})
METHOD_SETTINGS["AdamR"] = MethodSetting(kind="optimizer", config={"optimizer": {"class_path": "sstkit.optim.AdamR", "init_args": {"lr": 1e-3, "delta_decay": 0.5}}})
# No stopping within the generic tests' 6 steps (a random tiny model is "collapsed" from step 0).
METHOD_SETTINGS["CleanUnlearning"] = MethodSetting(init_args={"min_steps": 100, "check_every": 2, "eval_batches": 2})
# BadNets-poisoned SST-2 with triggered val/test sets, validated every 2 steps: val/asr is logged in every run.
METHOD_SETTINGS["AttackSuccessRate"] = MethodSetting(family="poisoned_text", logs=("val/asr",))
METHOD_SETTINGS["FreeLB"] = MethodSetting(init_args={"steps": 2, "adv_lr": 0.1, "init_mag": 0.1, "max_norm": 1.0})
# ε = 1e-2 so that the tiny random model's perturbation is not lost below fp32 resolution.
METHOD_SETTINGS["SMART"] = MethodSetting(init_args={"weight": 1.0, "epsilon": 1e-2, "bregman_weight": 0.5})
METHOD_SETTINGS["SelfCalibration"] = MethodSetting(init_args={"alpha_max": 0.5, "ramp_steps": 2, "ema_decay": 0.9})
# Pseudo-labels every test input (threshold 0) at step 1, before the resume test's checkpoint at step 3.
METHOD_SETTINGS["TransductiveFineTuning"] = MethodSetting(init_args={"threshold": 0.0, "start_step": 1})
METHOD_SETTINGS["ReplacedTokenDetection"] = MethodSetting(init_args={"rtd_weight": 50.0, "simcse_weight": 1.0, "generator_scale": 0.5})
# Teacher = the tiny random OPT as built (no checkpoint in the tests); the student is re-drawn and distilled into it.
METHOD_SETTINGS["MLKD"] = MethodSetting(family="lm", init_args={"temperature": 2.0, "top_k": 2}, logs=("method/mlkd/pred", "method/mlkd/hidden"))
# Four contrastive-stage steps (SetFit pairs within the batch; past the resume test's checkpoint at step 3), then the classification loss.
METHOD_SETTINGS["HyperAdapters"] = MethodSetting(init_args={"bottleneck": 4, "task_dim": 8, "hyper_dim": 8, "contrastive_steps": 4}, logs=("method/hyper_adapters/contrastive_loss",))
# New gradient projection every 2 steps, so the resume test restores a projection that was re-drawn mid-run.
METHOD_SETTINGS["GaLore"] = MethodSetting(init_args={"rank": 2, "update_proj_gap": 2, "scale": 0.25})
# 4 labelled SST-2 rows (of the tiny data copy) per step next to the tiny OPT's WikiText-2 blocks.
METHOD_SETTINGS["AttributeDiscriminator"] = MethodSetting(family="lm", init_args={"batch_size": 4, "dev_rows": 8}, logs=("method/attribute_head/loss", "method/attribute_head/train_acc"))
