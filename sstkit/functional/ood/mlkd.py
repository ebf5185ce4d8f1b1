r"""MLKD: multi-level knowledge distillation of a fine-tuned LM into a random student (Wu et al., ACL 2023).

A teacher language model (pretrained, then fine-tuned on the in-distribution texts) is distilled into a randomly
initialised student of the same architecture, on ID texts only; the student's perplexity is the OOD score. The
loss at every counted position :math:`t` (``mask``; padding never counts) is

.. math::

    L = \underbrace{\mathrm{KL}\big(\mathrm{softmax}(z^T_t/\tau)\,\|\,\mathrm{softmax}(z^S_t/\tau)\big)}_{L_{pred}}
      + \underbrace{\sum_{s \in S}\sum_{k=1}^{K} \beta_{s,k}\, d_{s,(k)}(t)}_{L_{hidden}},
    \qquad d_{s,l}(t) = \tfrac{1}{D}\,\big\| P_l(h^T_{l,t}) - h^S_{s,t} \big\|_2^2

averaged over the counted positions. :math:`z` are next-token logits, :math:`h_{l}` the hidden states after
block :math:`l` (index 0 = embeddings, as in Hugging Face's ``hidden_states``), :math:`S` the distilled student
layers, :math:`d_{s,(k)}(t)` the :math:`k`-th smallest distance of student layer :math:`s` to the teacher layers
(per token: "each student layer learns from its K most similar teacher layers"), :math:`P_l` a learned linear
projection of teacher states into the student width, and :math:`\beta_{s,k} = K\,\mathrm{softmax}_k(b_s)` with
trainable logits :math:`b` (initialised equal, so every :math:`\beta = 1` at the start).

Where the official code (``microsoft/KC``, ``papers/MLKD_OOD/models/kd_clm.py``) and the paper differ, and what
this module does:

- Projection: the code uses **one** ``nn.Linear`` shared by all teacher layers (``kd_linear_tea``); the paper's
  notation suggests one per teacher layer. Default ``shared_projection=True`` (the code); ``False`` gives one
  per teacher layer.
- Layers: the code distils student layers 3..9 of 12 from teacher layers 1..12 with K = 2. Defaults here:
  student layers ``L//4 .. 3L//4`` (3..9 for L = 12), all teacher blocks 1..L, ``top_k=2``.
- β: the code creates ``nn.Parameter(torch.ones(14)).to(device)``, which on a GPU is a plain tensor, so β never
  trains, and unconstrained β would drive the loss to -∞ anyway. Here β is ``K·softmax`` of trainable logits
  (bounded, sums to K per layer) and ``train_beta=False`` freezes it at 1.
- Padding: the code's losses run over every position of a max-length padded batch for the LM loss and its
  evaluation mask is not shifted with the labels; here ``mask`` selects real positions for every term, and
  :func:`sstkit.functional.ood.scores.sequence_nll` shifts the mask with the targets.
- τ: the KL is taken at temperature τ without the τ² factor of Hinton et al. (as the code; the paper's τ = 1).

Example::

    distiller = HiddenDistiller(student_dim=64, teacher_dim=64, student_layers=[1], teacher_layers=[1, 2])
    out_s = student(input_ids, attention_mask=mask, output_hidden_states=True)
    with torch.no_grad():
        out_t = teacher(input_ids, attention_mask=mask, output_hidden_states=True)
    loss = prediction_distillation(out_s.logits, out_t.logits, mask, temperature=1.0) \
        + distiller(out_s.hidden_states, out_t.hidden_states, mask)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sstkit.errors import SstkitError


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values`` (B, T) over the positions where ``mask`` (B, T) is true; all positions without a mask."""
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def prediction_distillation(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None,
                            temperature: float = 1.0) -> Tensor:
    """:math:`L_{pred}`: KL(teacher ‖ student) of the next-token distributions at temperature τ, mean over ``mask``.

    Example::

        >>> z = torch.randn(2, 3, 5)
        >>> float(prediction_distillation(z, z))
        0.0
    """
    if temperature <= 0:
        raise SstkitError(f"MLKD temperature must be > 0, got {temperature}")
    # fp32 softmax: under bf16 autocast the KL of two near-equal distributions is otherwise mostly rounding.
    log_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(-1)
    return masked_mean(kl, mask)


def default_student_layers(num_layers: int) -> list[int]:
    """The middle half of the blocks, ``L//4 .. 3L//4`` (3..9 for 12 blocks, as the official code), at least [1].

    Example::

        >>> default_student_layers(12)
        [3, 4, 5, 6, 7, 8, 9]
    """
    lo, hi = max(1, num_layers // 4), max(1, (3 * num_layers) // 4)
    return list(range(lo, hi + 1))


class HiddenDistiller(nn.Module):
    """:math:`L_{hidden}` with its trainable parts: the teacher projection(s) :math:`P` and the β logits.

    Args:
        student_dim: width of the student's hidden states.
        teacher_dim: width of the teacher's hidden states.
        student_layers: indices into the student's ``hidden_states`` (0 = embeddings) that are distilled.
        teacher_layers: indices into the teacher's ``hidden_states`` a student layer may match.
        top_k: how many of the most similar teacher layers each student layer learns from (K).
        shared_projection: one projection for all teacher layers (official code) or one per teacher layer.
        train_beta: learn the β weights (``K·softmax``); False keeps every β at 1.

    The projections start as the identity when the widths agree (a student equal to the teacher then has
    :math:`d = 0` for its own layer), else with PyTorch's default init.
    """

    def __init__(self, student_dim: int, teacher_dim: int, student_layers: Sequence[int],
                 teacher_layers: Sequence[int], top_k: int = 2, shared_projection: bool = True,
                 train_beta: bool = True) -> None:
        super().__init__()
        if not student_layers or not teacher_layers:
            raise SstkitError("MLKD needs at least one student and one teacher layer")
        if not 1 <= top_k <= len(teacher_layers):
            raise SstkitError(f"MLKD top_k must be in 1..{len(teacher_layers)} (the teacher layers), got {top_k}")
        self.student_layers, self.teacher_layers, self.top_k = list(student_layers), list(teacher_layers), top_k
        count = 1 if shared_projection else len(self.teacher_layers)
        self.projections = nn.ModuleList(nn.Linear(teacher_dim, student_dim) for _ in range(count))
        if student_dim == teacher_dim:
            for proj in self.projections:
                nn.init.eye_(proj.weight)
                nn.init.zeros_(proj.bias)
        self.beta_logits = nn.Parameter(torch.zeros(len(self.student_layers), top_k), requires_grad=train_beta)

    def beta(self) -> Tensor:
        """β, shape (student layers, K); each row sums to K."""
        return self.top_k * torch.softmax(self.beta_logits, dim=-1)

    def distances(self, student_hidden: Sequence[Tensor], teacher_hidden: Sequence[Tensor]) -> Tensor:
        """:math:`d_{s,l}(t)`, shape (B, T, student layers, teacher layers)."""
        projected = [
            self.projections[0 if len(self.projections) == 1 else i](teacher_hidden[layer].detach().float())
            for i, layer in enumerate(self.teacher_layers)
        ]
        rows = []
        for s in self.student_layers:
            h = student_hidden[s].float()
            rows.append(torch.stack([(p - h).pow(2).mean(-1) for p in projected], dim=-1))
        return torch.stack(rows, dim=-2)

    def forward(self, student_hidden: Sequence[Tensor], teacher_hidden: Sequence[Tensor],
                mask: Tensor | None = None) -> Tensor:
        """:math:`L_{hidden}` averaged over the positions of ``mask`` (B, T)."""
        for name, states, layers in (("student", student_hidden, self.student_layers),
                                     ("teacher", teacher_hidden, self.teacher_layers)):
            if max(layers) >= len(states):
                raise SstkitError(f"MLKD {name} layer {max(layers)} does not exist ({len(states)} hidden states, "
                                  "0 = embeddings)")
        nearest = self.distances(student_hidden, teacher_hidden).topk(self.top_k, dim=-1, largest=False).values
        per_token = (nearest * self.beta()).sum(dim=(-2, -1))
        return masked_mean(per_token, mask)


def mlkd_loss(student_logits: Tensor, teacher_logits: Tensor, student_hidden: Sequence[Tensor],
              teacher_hidden: Sequence[Tensor], distiller: HiddenDistiller | None, mask: Tensor | None = None,
              temperature: float = 1.0, hidden_weight: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """``(L, L_pred, L_hidden)`` with ``L = L_pred + hidden_weight · L_hidden``; no distiller: ``L_hidden = 0``."""
    pred = prediction_distillation(student_logits, teacher_logits, mask, temperature)
    if distiller is None or hidden_weight == 0:
        hidden = pred.new_zeros(())
    else:
        hidden = distiller(student_hidden, teacher_hidden, mask)
    return pred + hidden_weight * hidden, pred, hidden


def reinitialize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-draws a Hugging Face model's weights from its own init (same config), without touching the global RNG.

    Example::

        >>> from transformers import OPTConfig, OPTForCausalLM
        >>> lm = OPTForCausalLM(OPTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32,
        ...                               vocab_size=50, word_embed_proj_dim=16))
        >>> _ = reinitialize_(lm, seed=1)
    """
    config = getattr(model, "config", None)
    if config is None:
        raise SstkitError(f"MLKD can re-initialise Hugging Face models only, got {type(model).__name__}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(model)(config)
    model.load_state_dict(fresh.state_dict())
    return model
