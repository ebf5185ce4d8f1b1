"""``decompose(model, inputs, relevant=...)``: CD-T of a model's output with respect to sets of input tokens.

Supported models (found by their structure, so nothing here imports Lightning):

- sstkit's :class:`~sstkit.models.TextClassifier` (``encoder`` + ``head`` + ``pooling``): class logits;
- a bare Hugging Face BERT-type encoder: the last hidden state;
- sstkit's :class:`~sstkit.models.CausalLM` (``lm``) or a HF ``OPTForCausalLM``: next-token logits.

Example:
    >>> dec = decompose(classifier, {"input_ids": ids, "attention_mask": mask},  # doctest: +SKIP
    ...                 relevant=[[1], [2, 3]])
    >>> dec.beta.shape  # (examples, sets, labels): the logits explained by token 1, and by tokens 2-3
    torch.Size([1, 2, 2])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sstkit.functional.cdt.bert import bert_embeddings, bert_encoder, classifier_head, is_bert_encoder, pool
from sstkit.functional.cdt.opt import is_opt_lm, opt_embeddings, opt_logits
from sstkit.functional.cdt.rules import Pair, linear
from sstkit.functional.cdt.walk import HeadHook, Propagation

Relevant = Tensor | Sequence[Sequence[int]] | Sequence[int] | None


@dataclass
class Decomposition:
    """The output split ``β + γ``, each (examples, sets, ...); ``trace`` maps node names to pairs (flattened
    example-major over sets) when asked for."""

    beta: Tensor
    gamma: Tensor
    trace: dict[str, Pair] | None = None

    @property
    def total(self) -> Tensor:
        """β + γ: the model's own output (completeness)."""
        return self.beta + self.gamma


def relevant_mask(relevant: Relevant, examples: int, length: int, device: torch.device | None = None) -> Tensor:
    """A bool mask (examples, sets, time) from position lists, one list, or a (sets, time) / (examples, sets, time)
    tensor. ``None`` means one set of all tokens."""
    if relevant is None:
        return torch.ones(examples, 1, length, dtype=torch.bool, device=device)
    if isinstance(relevant, Tensor):
        mask = relevant.bool().to(device)
    else:
        sets = [relevant] if relevant and isinstance(relevant[0], int) else list(relevant)
        mask = torch.zeros(len(sets), length, dtype=torch.bool, device=device)
        for s, positions in enumerate(sets):
            bad = [p for p in positions if not -length <= p < length]
            if bad:
                raise ValueError(f"relevant positions {bad} are outside a sequence of {length} tokens")
            mask[s, list(positions)] = True
    if mask.dim() == 2:
        mask = mask.unsqueeze(0).expand(examples, -1, -1)
    if mask.dim() != 3 or mask.shape[0] != examples or mask.shape[2] != length:
        raise ValueError(f"relevant mask of shape {tuple(mask.shape)} does not fit {examples} x sets x {length}")
    return mask


def _inputs(inputs: Tensor | dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
    if isinstance(inputs, Tensor):
        ids = inputs if inputs.dim() == 2 else inputs.unsqueeze(0)
        return ids, torch.ones_like(ids), None
    ids = inputs["input_ids"]
    ids = ids if ids.dim() == 2 else ids.unsqueeze(0)
    mask = inputs.get("attention_mask")
    mask = torch.ones_like(ids) if mask is None else mask.view_as(ids)
    return ids, mask, inputs.get("token_type_ids")


def _split(emb: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """β = E on the relevant tokens, γ = E elsewhere; flattened to (examples·sets, time, hidden)."""
    sets = mask.shape[1]
    e = emb.unsqueeze(1).expand(-1, sets, -1, -1)
    m = mask.unsqueeze(-1).to(emb.dtype)
    return (e * m).flatten(0, 1), (e * (1 - m)).flatten(0, 1)


@torch.no_grad()
def decompose(
    model: nn.Module,
    inputs: Tensor | dict[str, Tensor],
    relevant: Relevant = None,
    attention: str = "total",
    sign_fix: str | bool = "all",
    head_hook: HeadHook | None = None,
    trace: bool = False,
    start: tuple[int, Tensor] | None = None,
) -> Decomposition:
    """CD-T of ``model``'s output on ``inputs`` for each set of relevant token positions.

    Args:
        model: a TextClassifier, a HF BERT-type encoder, a CausalLM or a HF OPTForCausalLM (eval mode).
        inputs: token ids (examples, time) or a dict with ``input_ids``, ``attention_mask`` (and ``token_type_ids``).
        relevant: position lists (one set each), one list, a bool tensor (sets, time) or (examples, sets, time);
            an empty set puts everything in γ, which is how circuit discovery starts (sources via ``head_hook``).
        attention: ``total`` (BERT rule) or ``beta`` (circuit rule), see :mod:`.rules`.
        sign_fix: ``all`` (after every operation), ``layer`` (at block ends) or ``none``; see :class:`Propagation`.
        head_hook: changes / reads each layer's per-head context pair (see :mod:`.circuit`).
        trace: keep (β, γ) of every node in ``Decomposition.trace``.
        start: ``(layer, hidden)``: begin at block ``layer`` from the clean state entering it (examples, time,
            hidden), all in γ (the sets of ``relevant`` must then be empty); sources come in through ``head_hook``.

    Returns:
        A :class:`Decomposition` with β, γ of shape (examples, sets, labels) for a classifier, (examples, sets, time,
        hidden) for an encoder and (examples, sets, time, vocab) for a causal LM.
    """
    ids, attn, token_types = _inputs(inputs)
    mask = relevant_mask(relevant, ids.shape[0], ids.shape[1], ids.device)
    sets = mask.shape[1]
    # Every set of one example has the same total (completeness), so totals are computed once per example.
    prop = Propagation(attention, sign_fix, head_hook, {} if trace else None, start[0] if start else 0, sets)
    if start is not None and mask.any():
        raise ValueError("decompose(start=...) begins inside the network: relevant token sets must be empty")
    flat_attn = attn.repeat_interleave(sets, dim=0)
    core = getattr(model, "lm", model)  # sstkit's CausalLM wraps the HF model as .lm
    if is_opt_lm(core):
        beta, gamma = _split(opt_embeddings(core, ids, attn) if start is None else start[1], mask)
        b, g = opt_logits(core, beta, gamma, flat_attn, prop)
    else:
        encoder = model if is_bert_encoder(model) else getattr(model, "encoder", model)
        if not is_bert_encoder(encoder):
            raise TypeError(f"cdt supports BERT-type encoders and OPT causal LMs, not {type(model).__name__}")
        emb = bert_embeddings(encoder, ids, attn, token_types) if start is None else start[1]
        beta, gamma = _split(emb, mask)
        b, g = bert_encoder(encoder, beta, gamma, flat_attn, prop)
        if hasattr(model, "head") and hasattr(model, "pooling"):
            b, g = pool(b, g, flat_attn, model.pooling)
            b, g = linear(b, g, classifier_head(model.head))
    shape = (ids.shape[0], sets, *b.shape[1:])
    return Decomposition(b.reshape(shape), g.reshape(shape), prop.trace)
