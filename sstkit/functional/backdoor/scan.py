"""Trigger recovery, label detection and model detection by a first-order scan of the whole vocabulary.

For a candidate target label t, the scan inserts a placeholder token at a random position of every defense input
x_i that is neither labelled nor predicted t, and reads the gradient g_i of a loss toward t with respect to the
input embedding at that position: the cross-entropy CE(f(x_i), t) (``objective="ce"``), or the negative logit
margin −(z_t − logsumexp_{j≠t} z_j) (``"margin"``, the default), which does not saturate where the model already
predicts t — as an exposed model that collapsed onto t does for every input. Replacing the placeholder by token v changes the loss by about
(e_v − e_cur) · g_i (HotFlip, Ebrahimi et al. 2018), so the candidates are the top-k tokens of

    s_v = − e_v · Σ_i g_i                      (whole vocabulary, one matrix product),

each verified by its *flip rate*: the share of those inputs the model puts into t once v is inserted. ``rounds``
> 1 repeats the gradient step with the best verified token in place of the placeholder. The backdoor label is the
t whose best token flips most, the model's backdoor score is that flip rate, and a model is flagged above a
threshold. On an exposed model (:mod:`sstkit.functional.backdoor.exposure`) clean features are gone, so natural
words no longer flip predictions and only a trigger does; on a binary task the exposed model may collapse onto
the target class itself, which leaves nothing to flip for that label: then the exposed model still *proposes* the
candidates (its gradients no longer point at clean sentiment words) and the original model verifies their flips
(``fallback``). The label is decided by what the recovered trigger flips to, never by the collapse class alone.

Example:
    >>> result = scan_triggers(exposed, defense_batches, num_labels=2, allowed=vocab_mask)
    >>> result.label, result.best.token_id, result.score  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sstkit.errors import SstkitError
from sstkit.functional.backdoor.common import (
    Batch,
    LogitsFn,
    default_logits,
    insert_tokens,
    model_device,
    predict,
    select_rows,
    to_device,
)


@dataclass
class Candidate:
    """A scanned token: its id, first-order score and verified flip rate."""

    token_id: int
    grad_score: float
    flip_rate: float


@dataclass
class LabelScan:
    """The scan toward one label: the inputs it could flip and the verified candidates, best first."""

    label: int
    num_inputs: int
    candidates: list[Candidate] = field(default_factory=list)
    verified_on: str = "self"

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None


@dataclass
class ScanResult:
    """All labels' scans; ``label`` / ``best`` / ``score`` are those of the label whose best token flips most."""

    scans: list[LabelScan]

    @property
    def label(self) -> int | None:
        scored = [s for s in self.scans if s.best is not None and s.best.flip_rate > 0]
        return max(scored, key=lambda s: s.best.flip_rate).label if scored else None

    @property
    def best(self) -> Candidate | None:
        label = self.label
        return None if label is None else next(s.best for s in self.scans if s.label == label)

    @property
    def score(self) -> float:
        """The model's backdoor score: the best token's flip rate (0 when nothing could be scanned)."""
        best = self.best
        return best.flip_rate if best is not None else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score, "best": asdict(self.best) if self.best else None,
                "scans": [{"label": s.label, "num_inputs": s.num_inputs, "verified_on": s.verified_on,
                           "candidates": [asdict(c) for c in s.candidates]} for s in self.scans]}


def input_embedding(model: nn.Module) -> nn.Embedding:
    """The token embedding of a classifier: ``encoder.get_input_embeddings()`` (HF), else the first nn.Embedding."""
    for owner in (getattr(model, "encoder", None), model):
        if owner is not None and hasattr(owner, "get_input_embeddings"):
            emb = owner.get_input_embeddings()
            if isinstance(emb, nn.Embedding):
                return emb
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            return module
    raise SstkitError(f"{type(model).__name__} has no token embedding (nn.Embedding) to scan")


def flip_rate(model: nn.Module, batches: list[Batch], label: int, token_ids: list[int], seed: int = 0,
              pad_id: int = 0, logits_fn: LogitsFn = default_logits) -> float:
    """Share of rows of ``batches`` the model puts into ``label`` once ``token_ids`` are inserted (seeded position)."""
    logits, _ = predict(model, insert_tokens(batches, token_ids, seed, pad_id), logits_fn)
    return float((logits.argmax(-1) == label).double().mean()) if len(logits) else 0.0


def flippable(model: nn.Module, batches: list[Batch], label: int, logits_fn: LogitsFn = default_logits) -> list[Batch]:
    """The rows neither labelled nor predicted ``label``: the inputs a trigger toward ``label`` must flip."""
    out = []
    for batch in batches:
        logits, _ = predict(model, [batch], logits_fn)
        keep = (logits.argmax(-1) != label) & (batch["labels"].cpu() != label)
        out += select_rows([batch], lambda b, keep=keep: keep)
    return out


OBJECTIVES = ("margin", "ce")


def toward_label_loss(logits: Tensor, label: int, objective: str = "margin") -> Tensor:
    """Summed loss whose descent moves ``logits`` toward ``label``: CE, or the negative logit margin."""
    if objective == "ce":
        target = torch.full((logits.shape[0],), label, device=logits.device, dtype=torch.long)
        return F.cross_entropy(logits, target, reduction="sum")
    if objective != "margin":
        raise SstkitError(f"scan objective must be one of {OBJECTIVES}, got {objective!r}")
    others = torch.cat([logits[:, :label], logits[:, label + 1 :]], dim=1)
    return -(logits[:, label] - others.logsumexp(dim=1)).sum()


def token_gradient(model: nn.Module, batches: list[Batch], label: int,
                   logits_fn: LogitsFn = default_logits, objective: str = "margin") -> Tensor:
    """Σ_i ∂loss(f(x_i), label)/∂e at each row's ``trigger_pos`` (:func:`toward_label_loss`): shape (dim,)."""
    emb, device = input_embedding(model), model_device(model)
    captured: dict[str, Tensor] = {}

    def keep_output(module: nn.Module, args: Any, out: Tensor) -> Tensor:
        out.retain_grad()
        captured["out"] = out
        return out

    was_training, needs = model.training, emb.weight.requires_grad
    model.eval()
    emb.weight.requires_grad_(True)  # the embedding output must be part of the graph
    handle = emb.register_forward_hook(keep_output)
    total = torch.zeros(emb.embedding_dim, device=device)
    try:
        for batch in batches:
            batch = to_device(batch, device)
            toward_label_loss(logits_fn(model, batch).float(), label, objective).backward()
            grads = captured["out"].grad
            total += grads[torch.arange(grads.shape[0], device=device), batch["trigger_pos"]].sum(0)
        model.zero_grad(set_to_none=True)
    finally:
        handle.remove()
        emb.weight.requires_grad_(needs)
        model.train(was_training)
    return total


def scan_label(model: nn.Module, batches: list[Batch], label: int, allowed: Tensor | None = None,
               num_candidates: int = 20, rounds: int = 2, placeholder_id: int = 0, pad_id: int = 0,
               min_inputs: int = 8, seed: int = 0, fallback: nn.Module | None = None,
               logits_fn: LogitsFn = default_logits, objective: str = "margin") -> LabelScan:
    """The top ``num_candidates`` first-order tokens toward ``label``, verified by flip rate, best first.

    Args:
        model: the classifier to scan (exposed or not).
        batches: clean labelled defense batches.
        label: the candidate target label.
        allowed: bool mask over the vocabulary (None: every token); special tokens should be excluded.
        num_candidates: tokens verified per round.
        rounds: gradient rounds; round r > 1 puts the best verified token in the placeholder's place.
        placeholder_id: token id inserted for the first gradient (e.g. ``[MASK]``).
        pad_id: padding id of the tokenizer.
        min_inputs: skip the label (no candidates) when fewer inputs could be flipped.
        seed: seed of the insertion positions.
        fallback: where ``model`` leaves fewer than ``min_inputs`` inputs to flip (an exposed model collapsed onto
            ``label``), ``model`` still proposes the candidates but ``fallback`` (the original model) picks the
            inputs and verifies the flips.
        logits_fn: how to get logits from ``model`` and a batch.
        objective: ``margin`` or ``ce``, the loss whose gradient ranks the tokens (module docstring).
    """
    if objective not in OBJECTIVES:
        raise SstkitError(f"scan objective must be one of {OBJECTIVES}, got {objective!r}")
    verifier, where = model, "self"
    inputs = flippable(model, batches, label, logits_fn)
    count = sum(int(b["labels"].numel()) for b in inputs)
    if count < min_inputs and fallback is not None:
        verifier, where = fallback, "fallback"
        inputs = flippable(fallback, batches, label, logits_fn)
        count = sum(int(b["labels"].numel()) for b in inputs)
    scan = LabelScan(label=label, num_inputs=count, verified_on=where)
    if count < min_inputs:
        return scan
    weight = input_embedding(model).weight.detach()
    verified: dict[int, Candidate] = {}
    current = placeholder_id
    for _ in range(max(1, rounds)):
        grad = token_gradient(model, insert_tokens(inputs, [current], seed, pad_id), label, logits_fn, objective)
        scores = -(weight @ grad.to(weight.dtype)).float().cpu()
        if allowed is not None:
            scores = scores.masked_fill(~allowed.cpu()[: len(scores)], float("-inf"))
        top = torch.topk(scores, min(num_candidates, int(torch.isfinite(scores).sum())))
        for value, token in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            if token not in verified:
                rate = flip_rate(verifier, inputs, label, [token], seed + 1, pad_id, logits_fn)
                verified[token] = Candidate(token_id=token, grad_score=value, flip_rate=rate)
        best = max(verified.values(), key=lambda c: c.flip_rate)
        if best.token_id == current:
            break
        current = best.token_id
    scan.candidates = sorted(verified.values(), key=lambda c: (-c.flip_rate, -c.grad_score))
    return scan


def scan_triggers(model: nn.Module, batches: list[Batch], num_labels: int, labels: list[int] | None = None,
                  **options: Any) -> ScanResult:
    """:func:`scan_label` for every label (or ``labels``); the result names the detected label and trigger."""
    if num_labels < 2:
        raise SstkitError(f"num_labels must be >= 2, got {num_labels}")
    return ScanResult([scan_label(model, batches, t, **options) for t in (labels or range(num_labels))])


def vocabulary_mask(tokenizer: Any, exclude_subwords: bool = False) -> Tensor:
    """Allowed scan tokens of a Hugging Face tokenizer: no special, ``[unused…]`` or (optionally) ``##`` pieces."""
    vocab = tokenizer.get_vocab()
    allowed = torch.ones(max(vocab.values()) + 1, dtype=torch.bool)
    for token, index in vocab.items():
        if token.startswith("[") and token.endswith("]") or (exclude_subwords and token.startswith("##")):
            allowed[index] = False
    for index in tokenizer.all_special_ids:
        allowed[index] = False
    return allowed


def token_rank(scan: LabelScan, token_id: int) -> int | None:
    """1-based rank of ``token_id`` among a label scan's verified candidates (None if not among them)."""
    for rank, cand in enumerate(scan.candidates, start=1):
        if cand.token_id == token_id:
            return rank
    return None
