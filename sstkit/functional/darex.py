"""Choosing the rescale q of DAREx-q (:func:`sstkit.functional.delta.darex`): three ways.

1. **Global validation search** (:func:`search_q`): one q for the whole model. A coarse grid from ``1 − p``
   upward in steps of ``coarse_step`` stops after ``patience`` points without improvement; then a grid
   ``fine_factor``× finer around the best coarse point. The score callable (higher is better) should average
   several mask seeds.
2. **Per-layer analytic q_e** (:func:`analytic_q_rows`, :func:`analytic_qs`): with ``x̄_j`` the *signed* mean input
   of a linear layer (forward hooks on the fine-tuned model, :func:`collect_input_stats`) and
   ``c_ij = δ_ij·x̄_j`` (the bias delta is one extra column with input 1), each output row i takes

       q_i = argmin_{q ∈ {1−p, 1−p+0.001, …, 0.998}} | η(1 − (1−p)/q)·Σ_j c_ij + η²·φ(p)·Σ_j c_ij² / (4q²) + ln(2/0.05) |,
       φ(p) = (1 − 2p) / ln((1 − p)/p)   (φ(½) = ½, its limit),

   and the layer's ``q_e`` is the mean of its rows' ``q_i``. ``η`` is tuned on validation data. Optionally
   (``stop_share``, from the official code vengdeng/DAREx, not the paper) the upward scan of q stops once that
   share of a layer's rows has passed its minimum, so rows whose objective keeps falling (outlier features) do not
   drag q toward the top of the grid.
3. **Unsupervised** (:func:`mean_abs_change` as the score of :func:`search_q`): the q that minimises the mean
   absolute change of the last hidden state against the unpruned fine-tuned model on unlabelled task text.

Example:
    >>> import torch
    >>> result = search_q(lambda q: -abs(q - 0.3), p=0.9)
    >>> round(result.q, 2)
    0.3
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from sstkit.errors import SstkitError
from sstkit.functional.surgery import select_linears

CONFIDENCE_TERM = math.log(2 / 0.05)  # ln(2/δ) with failure probability δ = 0.05 in the paper's bound


@dataclass
class InputStats:
    """Statistics of one linear layer's inputs over calibration tokens (padding excluded).

    Attributes:
        mean: signed mean ``x̄_j`` per input feature.
        norm: ``‖x_j‖₂`` per input feature (WANDA's activation norm).
        count: number of tokens seen.
    """

    mean: Tensor
    norm: Tensor
    count: int


def collect_input_stats(
    root: nn.Module,
    run: Callable[[Any], Any],
    batches: Iterable[Any],
    patterns: str | Iterable[str] = "*",
    mask_key: str | None = "attention_mask",
) -> dict[str, InputStats]:
    """Signed means and norms of the inputs of every matching ``nn.Linear`` of ``root``, via forward hooks.

    Args:
        root: the module whose linears are hooked; names in the result are relative to it.
        run: called with each batch; runs the (fine-tuned) model forward, e.g. ``lambda b: model(**b)``.
        batches: calibration batches (labels are not needed).
        patterns: which linears (see :mod:`sstkit.functional.surgery`).
        mask_key: when a batch is a mapping with this key, tokens whose mask is 0 are left out of the statistics.

    Example:
        >>> stats = collect_input_stats(model.encoder, lambda b: model(b["input_ids"], b["attention_mask"]),
        ...                             loader)  # doctest: +SKIP
    """
    sums: dict[str, list[Any]] = {}
    current: dict[str, Tensor | None] = {"mask": None}

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            x = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])
            mask = current["mask"]
            if mask is not None and mask.numel() == x.shape[0]:
                x = x[mask.reshape(-1).to(x.device).bool()]
            entry = sums.setdefault(name, [torch.zeros(x.shape[1], dtype=torch.float64),
                                           torch.zeros(x.shape[1], dtype=torch.float64), 0])
            entry[0] += x.sum(0).double().cpu()
            entry[1] += x.pow(2).sum(0).double().cpu()
            entry[2] += x.shape[0]

        return record

    layers = select_linears(root, patterns, method="darex")
    handles = [module.register_forward_hook(hook(name)) for name, module in layers]
    try:
        with torch.no_grad():
            for batch in batches:
                current["mask"] = batch.get(mask_key) if mask_key and isinstance(batch, Mapping) else None
                run(batch)
    finally:
        for handle in handles:
            handle.remove()
    return {name: InputStats((s / max(n, 1)).float(), sq.sqrt().float(), int(n)) for name, (s, sq, n) in sums.items()}


def phi(p: float) -> float:
    """φ(p) = (1 − 2p) / ln((1 − p)/p), continuous at p = ½ (value ½)."""
    if not 0.0 < p < 1.0:
        raise SstkitError(f"φ(p) needs 0 < p < 1, got {p}")
    if abs(p - 0.5) < 1e-6:
        return 0.5
    return (1.0 - 2.0 * p) / math.log((1.0 - p) / p)


def q_grid(p: float, step: float = 0.001, q_max: float = 0.998) -> Tensor:
    """Candidate q's ``1 − p, 1 − p + step, …, q_max`` (just ``[1 − p]`` when ``1 − p > q_max``)."""
    low = 1.0 - p
    count = int(math.floor((q_max - low) / step + 1e-9)) + 1
    return torch.tensor([low], dtype=torch.float64) if count < 1 else low + step * torch.arange(count, dtype=torch.float64)


def analytic_q_rows(
    delta_weight: Tensor,
    mean_input: Tensor,
    p: float,
    eta: float,
    delta_bias: Tensor | None = None,
    step: float = 0.001,
    q_max: float = 0.998,
    stop_share: float | None = None,
) -> Tensor:
    """Per-output-row ``q_i`` of the analytic objective (module docstring), shape ``(out_features,)``.

    Args:
        delta_weight: ``δ`` of the linear weight, ``(out, in)``.
        mean_input: signed mean input ``x̄``, ``(in,)``.
        p: drop rate.
        eta: the scale η of the objective (tuned on validation data).
        delta_bias: ``δ`` of the bias, ``(out,)``; it enters as one more column with input 1.
        stop_share: None scans the whole grid (the paper); a share in (0, 1] ends the scan at the first q where
            that share of rows has seen its objective stop decreasing (the official code uses 0.8).
    """
    c = delta_weight.double() * mean_input.to(delta_weight.device).double().unsqueeze(0)
    if delta_bias is not None:
        c = torch.cat([c, delta_bias.double().unsqueeze(1)], dim=1)
    s1, s2 = c.sum(1, keepdim=True), c.pow(2).sum(1, keepdim=True)
    q = q_grid(p, step, q_max).to(c.device).unsqueeze(0)
    objective = (eta * (1.0 - (1.0 - p) / q) * s1 + eta**2 * phi(p) * s2 / (4.0 * q**2) + CONFIDENCE_TERM).abs()
    if stop_share is not None and objective.shape[1] > 1:
        if not 0.0 < stop_share <= 1.0:
            raise SstkitError(f"analytic q: stop_share must be in (0, 1], got {stop_share}")
        best_before = torch.cat([torch.full_like(objective[:, :1], math.inf), objective.cummin(dim=1).values[:, :-1]], 1)
        passed = (objective >= best_before).cummax(dim=1).values  # sticky: the row has passed its minimum
        done = (passed.double().mean(0) >= stop_share).nonzero()
        if done.numel():
            objective = objective[:, : int(done[0]) + 1]
    return q[0, objective.argmin(dim=1)].float()


def analytic_qs(
    delta: Mapping[str, Tensor],
    stats: Mapping[str, InputStats],
    p: float,
    eta: float,
    fallback: float | None = None,
    step: float = 0.001,
    q_max: float = 0.998,
    stop_share: float | None = None,
) -> dict[str, float]:
    """Per-tensor q for :func:`sstkit.functional.delta.darex`: the layer's ``q_e`` for its weight and bias.

    Args:
        delta: deltas keyed like ``<layer>.weight`` / ``<layer>.bias`` with the layer names of ``stats``.
        stats: input statistics per linear layer (:func:`collect_input_stats`).
        p, eta, step, q_max, stop_share: see :func:`analytic_q_rows`.
        fallback: q of delta tensors outside hooked linears (embeddings, LayerNorms); None means the mean of the
            layers' ``q_e``.

    Raises:
        SstkitError: when no linear weight of ``delta`` has statistics (names not aligned).
    """
    qs: dict[str, float] = {}
    for layer, st in stats.items():
        weight = delta.get(f"{layer}.weight")
        if weight is None or weight.ndim != 2 or weight.shape[1] != st.mean.numel():
            continue
        q_e = analytic_q_rows(weight, st.mean, p, eta, delta.get(f"{layer}.bias"), step, q_max,
                              stop_share).mean().item()
        qs[f"{layer}.weight"] = q_e
        if f"{layer}.bias" in delta:
            qs[f"{layer}.bias"] = q_e
    if not qs:
        raise SstkitError("analytic q: no delta tensor matches a hooked linear layer; collect the input statistics "
                          "on the module whose parameter names the delta uses")
    rest = fallback if fallback is not None else sum(qs.values()) / len(qs)
    return {name: qs.get(name, rest) for name in delta}


@dataclass
class SearchResult:
    """Outcome of :func:`search_q`: the best q, its score, and every (q, score) tried in order."""

    q: float
    score: float
    trace: list[tuple[float, float]] = field(default_factory=list)


def search_q(
    score: Callable[[float], float],
    p: float,
    coarse_step: float | None = None,
    patience: int = 3,
    fine_factor: int = 10,
    fine_span: float = 1.0,
    q_max: float = 0.999,
) -> SearchResult:
    """Coarse-then-fine grid search of one global q, maximising ``score(q)``.

    Args:
        score: higher is better (validation accuracy, or minus the hidden-state change); average mask seeds in it.
        p: drop rate; the grid starts at ``1 − p`` (DARE).
        coarse_step: spacing of the coarse grid; default ``min(1 − p, 0.1)``.
        patience: stop the coarse scan after this many points without improvement.
        fine_factor: the fine grid is this many times finer.
        fine_span: half-width of the fine grid around the best coarse q, in coarse steps.
        q_max: largest q tried.
    """
    if not 0.0 < p < 1.0:
        raise SstkitError(f"q search needs 0 < p < 1, got {p}")
    if patience < 1 or fine_factor < 1 or fine_span < 0:
        raise SstkitError(f"q search: patience and fine_factor must be >= 1 and fine_span >= 0, got {patience}, "
                          f"{fine_factor}, {fine_span}")
    step = coarse_step or min(1.0 - p, 0.1)
    tried: dict[float, float] = {}

    def evaluate(q: float) -> float:
        q = round(q, 6)
        if q not in tried:
            tried[q] = float(score(q))
        return tried[q]

    best_q, best, since = 1.0 - p, evaluate(1.0 - p), 0
    q = 1.0 - p + step
    while q <= q_max + 1e-9 and since < patience:
        value = evaluate(q)
        if value > best:
            best_q, best, since = q, value, 0
        else:
            since += 1
        q += step
    fine = step / fine_factor
    reach, center = int(round(fine_span * fine_factor)), best_q
    for k in range(-reach, reach + 1):
        candidate = center + k * fine
        if 1.0 - p - 1e-9 <= candidate <= q_max + 1e-9:
            value = evaluate(candidate)
            if value > best:
                best_q, best = candidate, value
    return SearchResult(round(best_q, 6), best, list(tried.items()))


def mean_abs_change(reference: Iterable[Tensor], pruned: Iterable[Tensor], masks: Iterable[Tensor] | None = None) -> float:
    """Mean ``|h_pruned − h_ft|`` over the (unpadded) tokens of matching last-hidden-state batches.

    Example:
        >>> mean_abs_change([torch.zeros(1, 2, 3)], [torch.ones(1, 2, 3)])
        1.0
    """
    total, count = 0.0, 0
    masks_list = list(masks) if masks is not None else None
    for i, (ref, new) in enumerate(zip(reference, pruned, strict=True)):
        diff = (new.float() - ref.float()).abs()
        if masks_list is not None:
            keep = masks_list[i].to(diff.device).bool()
            diff = diff[keep]
        total += diff.sum().item()
        count += diff.numel()
    return total / max(count, 1)
