"""CD-T through a Hugging Face BERT-type encoder (post-LayerNorm blocks) and sstkit's TextClassifier head.

The decomposition starts at the embedding output after its LayerNorm (β = E on the relevant tokens, γ = E elsewhere)
and follows each block exactly as ``BertLayer`` computes it: self-attention, output dense, residual, LayerNorm,
intermediate dense, activation, output dense, residual, LayerNorm. Pooling (``cls`` or mask-weighted ``mean``) and the
linear head follow :class:`sstkit.models.TextClassifier`.

Example:
    >>> from transformers import BertConfig, BertModel
    >>> import torch
    >>> enc = BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
    ...                            intermediate_size=32), add_pooling_layer=False).eval()
    >>> ids, mask = torch.tensor([[2, 5, 7, 3]]), torch.ones(1, 4, dtype=torch.long)
    >>> emb = bert_embeddings(enc, ids, mask)
    >>> beta, gamma = bert_encoder(enc, emb * 0, emb, mask, Propagation())
    >>> torch.allclose(beta + gamma, enc(input_ids=ids, attention_mask=mask).last_hidden_state, atol=1e-5)
    True
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sstkit.functional.cdt.rules import Pair, activation, attention_heads, layer_norm, linear, merge_heads
from sstkit.functional.cdt.walk import Propagation


def is_bert_encoder(module: nn.Module) -> bool:
    """Whether ``module`` looks like a HF BERT-type encoder (``embeddings`` + ``encoder.layer`` of BertLayers)."""
    layers = getattr(getattr(module, "encoder", None), "layer", None)
    return hasattr(module, "embeddings") and layers is not None and hasattr(layers[0], "attention")


def bert_embeddings(encoder: nn.Module, input_ids: Tensor, attention_mask: Tensor,
                    token_type_ids: Tensor | None = None) -> Tensor:
    """The embedding output after its LayerNorm (dropout off in eval mode), (batch, time, hidden)."""
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    return encoder.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)


def padding_mask(attention_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Additive mask (batch, 1, 1, time): 0 on tokens, the dtype's minimum on padding."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def bert_encoder(encoder: nn.Module, beta: Tensor, gamma: Tensor, attention_mask: Tensor,
                 prop: Propagation) -> Pair:
    """Propagates (β, γ) of the embedding output through every block; returns the last hidden state's pair.

    ``beta``/``gamma`` are (batch, time, hidden); ``attention_mask`` (batch or 1, time) of 0/1.
    """
    mask = padding_mask(attention_mask, beta.dtype)
    b, g = prop.record("embeddings", (beta, gamma))
    for i, layer in enumerate(encoder.encoder.layer):
        if i < prop.start_layer:
            continue
        sa = layer.attention.self
        scaling = getattr(sa, "scaling", sa.attention_head_size ** -0.5)
        cb, cg, _ = attention_heads(b, g, sa.query, sa.key, sa.value, sa.num_attention_heads, scaling, mask,
                                    prop.attention, prop.group)
        cb, cg = prop.record(f"layer{i}.heads", prop.heads(i, *prop.fix((cb, cg))))
        out = layer.attention.output
        ob, og = prop.fix(linear(merge_heads(cb), merge_heads(cg), out.dense))
        ab, ag = prop.fix((ob + b, og + g))
        ab, ag = prop.record(f"layer{i}.attention", prop.fix(layer_norm(ab, ag, out.LayerNorm, group=prop.group)))
        ib, ig = prop.fix(linear(ab, ag, layer.intermediate.dense))
        ib, ig = prop.record(f"layer{i}.intermediate",
                             prop.fix(activation(ib, ig, layer.intermediate.intermediate_act_fn)))
        ob, og = prop.fix(linear(ib, ig, layer.output.dense))
        ob, og = prop.fix((ob + ab, og + ag))
        b, g = prop.record(f"layer{i}", prop.fix_block(layer_norm(ob, og, layer.output.LayerNorm, group=prop.group)))
    return b, g


def pool(beta: Tensor, gamma: Tensor, attention_mask: Tensor, pooling: str) -> Pair:
    """Sentence pooling as :meth:`TextClassifier.encode` does it: first token, or the mask-weighted mean."""
    if pooling == "cls":
        return beta[:, 0], gamma[:, 0]
    mask = attention_mask.unsqueeze(-1).to(beta.dtype)
    count = mask.sum(1).clamp(min=1.0)
    return (beta * mask).sum(1) / count, (gamma * mask).sum(1) / count


def classifier_head(head: nn.Module) -> nn.Linear:
    """The linear layer of a TextClassifier head (``Sequential(Dropout, Linear)``) or a bare ``nn.Linear``."""
    if isinstance(head, nn.Linear):
        return head
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if len(linears) != 1:
        raise ValueError(f"cdt needs a head with exactly one linear layer, found {len(linears)}")
    return linears[0]
