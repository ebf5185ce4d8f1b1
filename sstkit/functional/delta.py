"""Delta parameters of a fine-tuned model and their pruning: DARE, DAREx-q, magnitude and WANDA.

Notation (used by the code): the delta of a tensor is ``δ = θ_ft − θ_pre``; ``p`` is the drop rate; ``m`` is a
Bernoulli(1 − p) keep mask drawn independently per entry.

- **DARE** (Yu et al., 2024): ``δ' = m ⊙ δ / (1 − p)``, unbiased: ``E[δ'] = δ``.
- **DAREx-q** (Deng et al., 2025): ``δ' = m ⊙ δ / q`` with ``q ∈ [1 − p, 1)``; ``q = 1 − p`` is DARE. A larger q
  shrinks the rescale, trading a bias for a much lower variance (choosing q: :mod:`sstkit.functional.darex`).
- **Magnitude**: keep the ``1 − p`` share of entries with the largest ``|δ|`` per tensor, no rescale.
- **WANDA on deltas**: per output row of a linear weight keep the entries with the largest ``|δ_ij|·‖x_j‖₂``
  (``‖x_j‖₂`` the norm of input feature j over calibration tokens), no rescale; tensors without input norms fall
  back to magnitude.

The task head is never part of a delta: :func:`extract_delta` only takes keys that the pretrained state dict has,
and skips ``exclude`` patterns (default ``head.*`` and ``classifier.*``). Whether embedding and LayerNorm deltas
are pruned is an option; the default prunes them, as both reference implementations (MergeLM, DAREx) do.

Example:
    >>> import torch
    >>> pre = {"w": torch.zeros(4, 4)}
    >>> ft = {"w": torch.ones(4, 4), "head.weight": torch.ones(2, 4)}
    >>> delta = extract_delta(ft, pre)
    >>> sorted(delta)
    ['w']
    >>> pruned = dare(delta, p=0.5, generator=torch.Generator().manual_seed(0))
    >>> merged = apply_delta(pre, pruned)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from sstkit.errors import SstkitError
from sstkit.functional.surgery import name_matches

DEFAULT_EXCLUDE = ("head.*", "classifier.*", "pooler.*")
METHODS = ("dare", "darex-q", "magnitude", "wanda")
# Parameter names of embeddings and LayerNorms in Hugging Face encoders (BERT, RoBERTa, OPT …).
_EMBEDDING = re.compile(r"(^|\.)(\w*embeddings?\w*|embed_\w+)(\.|$)")
_NORM = re.compile(r"(norm|(^|\.)ln(_\w+)?(\.|$))", re.IGNORECASE)

Delta = dict[str, Tensor]


def is_embedding(name: str) -> bool:
    """Whether a parameter name belongs to an embedding table."""
    return _EMBEDDING.search(name) is not None


def is_norm(name: str) -> bool:
    """Whether a parameter name belongs to a LayerNorm (or another norm layer)."""
    return _NORM.search(name) is not None


def _check_p(p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise SstkitError(f"drop rate p must be in [0, 1), got {p}")


def extract_delta(
    finetuned: Mapping[str, Tensor],
    pretrained: Mapping[str, Tensor],
    include_embeddings: bool = True,
    include_norms: bool = True,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
) -> Delta:
    """``δ = θ_ft − θ_pre`` for every floating tensor the two state dicts share with the same shape.

    Args:
        finetuned: state dict of the fine-tuned model (keys aligned with ``pretrained``).
        pretrained: state dict of the pretrained model; keys only in ``finetuned`` (the head) get no delta.
        include_embeddings: include embedding tables (default True, as DARE / DAREx do).
        include_norms: include LayerNorm weights and biases (default True, as DARE / DAREx do).
        exclude: glob / ``re:`` patterns of parameter names never to include.

    Raises:
        SstkitError: when the two state dicts share no tensor, or a shared tensor changed shape.
    """
    delta: Delta = {}
    for name, pre in pretrained.items():
        if name not in finetuned or not torch.is_floating_point(pre) or name_matches(name, exclude):
            continue
        if (not include_embeddings and is_embedding(name)) or (not include_norms and is_norm(name)):
            continue
        ft = finetuned[name]
        if ft.shape != pre.shape:
            raise SstkitError(f"delta: tensor {name} has shape {tuple(ft.shape)} in the fine-tuned model but "
                              f"{tuple(pre.shape)} in the pretrained one; they are not the same architecture")
        delta[name] = ft.detach().float() - pre.detach().float()
    if not delta:
        raise SstkitError("delta: the fine-tuned and pretrained state dicts share no parameter names; align the "
                          "prefixes (e.g. the classifier's 'encoder.' prefix) before extracting")
    return delta


def apply_delta(pretrained: Mapping[str, Tensor], delta: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``θ = θ_pre + δ`` for the keys of ``delta``; other tensors of ``pretrained`` are returned unchanged."""
    out = dict(pretrained)
    for name, d in delta.items():
        out[name] = (pretrained[name].float() + d).to(pretrained[name].dtype)
    return out


def keep_mask(shape: torch.Size, p: float, generator: torch.Generator | None) -> Tensor:
    """A Bernoulli(1 − p) keep mask drawn on the CPU, so a seed gives the same mask on every device."""
    return torch.rand(shape, generator=generator) >= p


def darex(
    delta: Mapping[str, Tensor],
    p: float,
    q: float | Mapping[str, float],
    generator: torch.Generator | None = None,
) -> Delta:
    """DAREx-q: drop with probability ``p``, rescale the kept entries by ``1/q``.

    Args:
        delta: the deltas to prune.
        p: drop rate in [0, 1).
        q: one rescale for all tensors, or a per-tensor mapping (tensors it lacks use ``1 − p``, i.e. DARE).
        generator: CPU generator for the masks (tensors are visited in ``delta``'s order).
    """
    _check_p(p)
    out: Delta = {}
    for name, d in delta.items():
        q_t = q.get(name, 1.0 - p) if isinstance(q, Mapping) else q
        if not 0.0 < q_t <= 1.0:
            raise SstkitError(f"DAREx: q for {name} must be in (0, 1], got {q_t}")
        mask = keep_mask(d.shape, p, generator).to(d.device)
        out[name] = d * mask / q_t
    return out


def dare(delta: Mapping[str, Tensor], p: float, generator: torch.Generator | None = None) -> Delta:
    """DARE: drop each delta entry with probability ``p`` and rescale the kept ones by ``1/(1 − p)``."""
    return darex(delta, p, 1.0 - p, generator)


def _keep_top(score: Tensor, keep: int, dim: int | None) -> Tensor:
    """Boolean mask of the ``keep`` largest scores (over the whole tensor, or per slice along ``dim``)."""
    if dim is None:
        flat = score.flatten()
        mask = torch.zeros_like(flat, dtype=torch.bool)
        if keep > 0:
            mask[flat.topk(keep).indices] = True
        return mask.view_as(score)
    mask = torch.zeros_like(score, dtype=torch.bool)
    if keep > 0:
        mask.scatter_(dim, score.topk(keep, dim=dim).indices, True)
    return mask


def magnitude_prune(delta: Mapping[str, Tensor], p: float) -> Delta:
    """Per tensor, keeps the ``round((1 − p)·n)`` entries with the largest ``|δ|``; no rescale."""
    _check_p(p)
    return {name: d * _keep_top(d.abs(), round((1.0 - p) * d.numel()), None) for name, d in delta.items()}


def wanda_prune(delta: Mapping[str, Tensor], p: float, input_norms: Mapping[str, Tensor]) -> Delta:
    """WANDA on deltas: score ``|δ_ij|·‖x_j‖₂``, keep the top ``1 − p`` share per output row; no rescale.

    Args:
        delta: the deltas.
        p: drop rate.
        input_norms: ``‖x_j‖₂`` per linear weight name (``…weight`` → tensor of its input width), e.g. from
            :func:`sstkit.functional.darex.collect_input_stats` (``stats[layer].norm``). Tensors without an
            entry (biases, embeddings, norms) are pruned by magnitude.
    """
    _check_p(p)
    out: Delta = {}
    for name, d in delta.items():
        norm = input_norms.get(name)
        if norm is None or d.ndim != 2 or norm.numel() != d.shape[1]:
            out[name] = d * _keep_top(d.abs(), round((1.0 - p) * d.numel()), None)
            continue
        score = d.abs() * norm.to(d.device, d.dtype).unsqueeze(0)
        out[name] = d * _keep_top(score, round((1.0 - p) * d.shape[1]), dim=1)
    return out


def prune_delta(
    delta: Mapping[str, Tensor],
    method: str,
    p: float,
    q: float | Mapping[str, float] | None = None,
    generator: torch.Generator | None = None,
    input_norms: Mapping[str, Tensor] | None = None,
) -> Delta:
    """Dispatches to :func:`dare`, :func:`darex`, :func:`magnitude_prune` or :func:`wanda_prune` by name."""
    if method == "dare":
        return dare(delta, p, generator)
    if method == "darex-q":
        if q is None:
            raise SstkitError("darex-q needs q (a number, or per-tensor values from sstkit.functional.darex)")
        return darex(delta, p, q, generator)
    if method == "magnitude":
        return magnitude_prune(delta, p)
    if method == "wanda":
        if input_norms is None:
            raise SstkitError("wanda needs input norms from calibration batches (collect_input_stats)")
        return wanda_prune(delta, p, input_norms)
    raise SstkitError(f"delta pruning method must be one of {METHODS}, got {method!r}")


def delta_stats(delta: Mapping[str, Tensor], mean_inputs: Mapping[str, Tensor] | None = None) -> dict[str, float]:
    """Mean / std / mean |·| of all delta entries, and of ``c_ij = δ_ij·x̄_j`` over linear weights when given.

    Example:
        >>> delta_stats({"w": torch.ones(2, 2)})["delta_mean"]
        1.0
    """
    flat = torch.cat([d.flatten().float() for d in delta.values()])
    stats = {"delta_mean": flat.mean().item(), "delta_std": flat.std().item(), "delta_abs_mean": flat.abs().mean().item(),
             "delta_numel": float(flat.numel())}
    if mean_inputs:
        cs = [(delta[n] * x.to(delta[n].device).unsqueeze(0)).flatten() for n, x in mean_inputs.items()
              if n in delta and delta[n].ndim == 2 and delta[n].shape[1] == x.numel()]
        if cs:
            c = torch.cat(cs)
            stats.update(c_mean=c.mean().item(), c_std=c.std().item(), c_abs_mean=c.abs().mean().item())
    return {k: v if math.isfinite(v) else float("nan") for k, v in stats.items()}
