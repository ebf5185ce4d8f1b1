"""Self-calibrated fine-tuning (Vega v1's description; no released code): soft targets from an EMA teacher.

    y_soft = (1 − α_t) · onehot(y) + α_t · softmax(f(x; θ̃))        α_t = α_max · min(1, t / T_ramp)
    L      = CE(f(x; θ), y_soft) = CE(f, y) + α_t · ( CE(f, p_θ̃) − CE(f, y) )

Cross-entropy is linear in its target, so the method is the family's own loss plus the second term, which is
what :func:`self_calibration_term` returns (zero, exactly, while α_t = 0).

Example::

    term = self_calibration_term(logits, labels, teacher_logits, calibration_alpha(step, 0.5, 1000))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def calibration_alpha(step: int, alpha_max: float, ramp_steps: int) -> float:
    """α_t ramped linearly from 0 at step 0 to ``alpha_max`` at ``ramp_steps`` (flat after)."""
    if ramp_steps <= 0:
        return alpha_max
    return alpha_max * min(1.0, step / ramp_steps)


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """CE with a probability target, mean over the batch."""
    return -(target_probs.float() * F.log_softmax(logits.float(), -1)).sum(-1).mean()


def self_calibration_term(logits: Tensor, labels: Tensor, teacher_logits: Tensor, alpha: float) -> Tensor:
    """α · (CE(logits, softmax(teacher)) − CE(logits, labels)): added to CE(logits, labels) it is CE to y_soft."""
    if alpha == 0.0:
        return torch.zeros((), device=logits.device)
    teacher = F.softmax(teacher_logits.detach().float(), -1)
    return alpha * (soft_cross_entropy(logits, teacher) - F.cross_entropy(logits.float(), labels))
