"""Exposure (Expose Before You Defend, EBYD): erase a backdoored model's clean features, keep its backdoor.

Clean Unlearning (CUL) runs gradient *ascent* on the clean cross-entropy of a small clean defense set D:

    θ ← Adam(θ, −∇_θ (1/|B|) Σ_{(x, y) ∈ B ⊂ D} CE(f_θ(x), y)),   lr 1e-5, weight decay 5e-4,

with the gradient norm clipped to ``max_grad_norm`` *after* the backward pass (the official code clips before it,
where clipping does nothing). Ascent destroys the features the clean task needs long before it destroys the
trigger → target shortcut, which does not depend on them. It stops by :class:`StopRule`: the predictions on D
collapse (one class holds ≥ ``collapse_share`` of them) or D's accuracy falls below ``min_accuracy``. The learning
rate window is narrow (5× too large erases the backdoor too), so every check is recorded in a collapse curve.

Random-label fine-tuning is the second exposure: plain descent on D with labels drawn uniformly at random.

Example:
    >>> result = clean_unlearning(model, defense_batches, num_labels=2, lr=1e-5)
    >>> result.stopped, result.curve[-1]["max_share"]  # doctest: +SKIP
    ('collapse', 0.97)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sstkit.errors import SstkitError
from sstkit.functional.backdoor.common import (
    Batch,
    LogitsFn,
    PredictionStats,
    default_logits,
    model_device,
    prediction_stats,
    to_device,
)


@dataclass
class StopRule:
    """When an exposure has gone far enough.

    Args:
        collapse_share: stop once one class holds at least this share of the defense predictions.
        min_accuracy: stop once defense accuracy is below this (None: only the collapse test).
        min_steps: never stop before this many optimisation steps.
    """

    collapse_share: float = 0.95
    min_accuracy: float | None = None
    min_steps: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.collapse_share <= 1.0:
            raise SstkitError(f"collapse_share must lie in (0, 1], got {self.collapse_share}")
        if self.min_accuracy is not None and not 0.0 <= self.min_accuracy <= 1.0:
            raise SstkitError(f"min_accuracy must lie in [0, 1], got {self.min_accuracy}")
        if self.min_steps < 0:
            raise SstkitError(f"min_steps must be >= 0, got {self.min_steps}")

    def reason(self, stats: PredictionStats, step: int) -> str | None:
        """``collapse`` or ``accuracy`` when the rule fires at ``step``, else None."""
        if step < self.min_steps:
            return None
        if stats.max_share >= self.collapse_share:
            return "collapse"
        if self.min_accuracy is not None and stats.accuracy < self.min_accuracy:
            return "accuracy"
        return None


@dataclass
class ExposureResult:
    """Outcome of an exposure run.

    Attributes:
        steps: optimisation steps taken.
        stopped: why it stopped (``collapse``, ``accuracy``) or None when it ran out of steps.
        curve: one record per check: step, accuracy, loss, class shares, max share, majority class.
    """

    steps: int
    stopped: str | None
    curve: list[dict[str, Any]] = field(default_factory=list)

    @property
    def collapse_label(self) -> int | None:
        """The class the defense predictions collapsed to (the majority class at the last check)."""
        return self.curve[-1]["majority"] if self.curve else None


def ascent_gradients(model: nn.Module, max_grad_norm: float | None) -> None:
    """Turns the descent gradients in ``.grad`` into ascent ones, then clips their norm (sign-invariant)."""
    params = [p for p in model.parameters() if p.grad is not None]
    for p in params:
        p.grad.neg_()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)


def _loop(model: nn.Module, batches: list[Batch], clean: list[Batch], ascent: bool,
          optimizer: torch.optim.Optimizer, device: torch.device, max_grad_norm: float | None, max_steps: int,
          rule: StopRule, check_every: int, num_labels: int | None, logits_fn: LogitsFn,
          result: ExposureResult) -> ExposureResult:
    if not batches:
        raise SstkitError("the defense set is empty")
    check_on = clean
    result.curve.append({"step": 0, **prediction_stats(model, check_on, num_labels, logits_fn).as_dict()})
    model.train()
    while result.steps < max_steps:
        for batch in batches:
            batch = to_device(batch, device)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(logits_fn(model, batch).float(), batch["labels"]).backward()
            if ascent:
                ascent_gradients(model, max_grad_norm)
            elif max_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            result.steps += 1
            if result.steps % check_every == 0 or result.steps == max_steps:
                stats = prediction_stats(model, check_on, num_labels, logits_fn)
                result.curve.append({"step": result.steps, **stats.as_dict()})
                result.stopped = rule.reason(stats, result.steps)
                if result.stopped:
                    model.eval()
                    return result
            if result.steps >= max_steps:
                break
    model.eval()
    return result


def clean_unlearning(model: nn.Module, batches: list[Batch], num_labels: int | None = None, lr: float = 1e-5,
                     weight_decay: float = 5e-4, max_grad_norm: float | None = 20.0, max_steps: int = 1000,
                     rule: StopRule | None = None, check_every: int = 1,
                     logits_fn: LogitsFn = default_logits) -> ExposureResult:
    """Clean Unlearning: gradient ascent on the defense set's clean CE until :class:`StopRule` fires.

    Args:
        model: the (backdoored) classifier; changed in place.
        batches: the clean defense set, labelled batches (cycled over until the rule or ``max_steps``).
        num_labels: number of classes (for the class shares).
        lr, weight_decay: Adam's settings (official: 1e-5, 5e-4).
        max_grad_norm: gradient-norm clip applied after backward (None: no clipping).
        max_steps: upper bound on optimisation steps.
        rule: the stop rule (default: 95% collapse).
        check_every: evaluate the defense set (and the rule) every this many steps.
        logits_fn: how to get logits from ``model`` and a batch.
    """
    return _loop(model, batches, batches, True, _adam(model, lr, weight_decay, max_steps, check_every),
                 model_device(model), max_grad_norm, max_steps, rule or StopRule(), check_every, num_labels,
                 logits_fn, ExposureResult(steps=0, stopped=None))


def random_label_finetune(model: nn.Module, batches: list[Batch], num_labels: int, lr: float = 2e-5,
                          weight_decay: float = 5e-4, max_grad_norm: float | None = 20.0, max_steps: int = 200,
                          rule: StopRule | None = None, check_every: int = 10, seed: int = 0,
                          logits_fn: LogitsFn = default_logits) -> ExposureResult:
    """Random-label exposure: fine-tune on the defense set with uniformly random labels (seeded).

    The rule is checked on the *true* labels; by default it only stops on a 95% collapse, else runs ``max_steps``.
    Arguments as in :func:`clean_unlearning`, plus ``seed`` of the random labels.
    """
    generator = torch.Generator().manual_seed(seed)
    noisy = [{**b, "labels": torch.randint(num_labels, b["labels"].shape, generator=generator)} for b in batches]
    return _loop(model, noisy, batches, False, _adam(model, lr, weight_decay, max_steps, check_every),
                 model_device(model), max_grad_norm, max_steps, rule or StopRule(), check_every, num_labels,
                 logits_fn, ExposureResult(steps=0, stopped=None))


def _adam(model: nn.Module, lr: float, weight_decay: float, max_steps: int, check_every: int) -> torch.optim.Adam:
    if max_steps < 1 or check_every < 1 or lr <= 0:
        raise SstkitError(f"need max_steps >= 1, check_every >= 1, lr > 0; got {max_steps}, {check_every}, {lr}")
    # Adam with coupled L2 weight decay, as the official schedule (torch.optim.Adam(weight_decay=5e-4)).
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
