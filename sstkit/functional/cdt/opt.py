"""CD-T through a Hugging Face OPT decoder (``OPTForCausalLM``, sstkit's :class:`~sstkit.models.CausalLM`).

The decomposition starts at ``project_in(token embedding) + position embedding`` (β on the relevant tokens) and
follows ``OPTDecoderLayer`` exactly: LayerNorm before (or after, OPT-350m style) attention and MLP, causal attention,
``out_proj``, residuals, ``fc1`` → activation → ``fc2``; then the final LayerNorm, ``project_out`` and the tied LM head.

Example:
    >>> from transformers import OPTConfig, OPTForCausalLM
    >>> import torch
    >>> lm = OPTForCausalLM(OPTConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, ffn_dim=32,
    ...                               num_attention_heads=2, word_embed_proj_dim=16)).eval()
    >>> ids, mask = torch.tensor([[2, 5, 7, 3]]), torch.ones(1, 4, dtype=torch.long)
    >>> emb = opt_embeddings(lm, ids, mask)
    >>> beta, gamma = opt_logits(lm, emb, emb * 0, mask, Propagation())
    >>> torch.allclose(beta, lm(input_ids=ids).logits, atol=1e-5)
    True
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sstkit.functional.cdt.rules import Pair, activation, attention_heads, layer_norm, linear, merge_heads
from sstkit.functional.cdt.walk import Propagation


def is_opt_lm(module: nn.Module) -> bool:
    """Whether ``module`` is an OPT causal LM (``model.decoder.layers`` + ``lm_head``)."""
    decoder = getattr(getattr(module, "model", None), "decoder", None)
    return decoder is not None and hasattr(decoder, "layers") and hasattr(module, "lm_head")


def opt_embeddings(lm: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Token (projected in) plus learned position embeddings, (batch, time, hidden), as OPTDecoder adds them."""
    decoder = lm.model.decoder
    tokens = decoder.embed_tokens(input_ids)
    if decoder.project_in is not None:
        tokens = decoder.project_in(tokens)
    positions = (torch.cumsum(attention_mask, dim=1) * attention_mask - 1).long()
    return tokens + decoder.embed_positions(attention_mask, 0, position_ids=positions)


def causal_mask(attention_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Additive mask (batch, 1, time, time): a query attends to itself, earlier tokens, and no padding."""
    t = attention_mask.shape[-1]
    allowed = torch.ones(t, t, dtype=torch.bool, device=attention_mask.device).tril()
    allowed = allowed[None, None] & attention_mask[:, None, None, :].bool()
    zero = torch.zeros((), dtype=dtype, device=attention_mask.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


def _maybe_norm(pair: Pair, module: nn.LayerNorm, apply: bool, prop: Propagation) -> Pair:
    return prop.fix(layer_norm(*pair, module, group=prop.group)) if apply else pair


def opt_decoder(lm: nn.Module, beta: Tensor, gamma: Tensor, attention_mask: Tensor, prop: Propagation) -> Pair:
    """Propagates (β, γ) of the embeddings through every decoder layer and the final norm / projection."""
    decoder = lm.model.decoder
    mask = causal_mask(attention_mask, beta.dtype)
    b, g = prop.record("embeddings", (beta, gamma))
    for i, layer in enumerate(decoder.layers):
        if i < prop.start_layer:
            continue
        before = layer.do_layer_norm_before
        xb, xg = _maybe_norm((b, g), layer.self_attn_layer_norm, before, prop)
        sa = layer.self_attn
        cb, cg, _ = attention_heads(xb, xg, sa.q_proj, sa.k_proj, sa.v_proj, sa.num_heads, sa.scaling, mask,
                                    prop.attention, prop.group)
        cb, cg = prop.record(f"layer{i}.heads", prop.heads(i, *prop.fix((cb, cg))))
        ob, og = prop.fix(linear(merge_heads(cb), merge_heads(cg), sa.out_proj))
        b, g = prop.fix((b + ob, g + og))
        b, g = prop.record(f"layer{i}.attention", _maybe_norm((b, g), layer.self_attn_layer_norm, not before, prop))
        xb, xg = _maybe_norm((b, g), layer.final_layer_norm, before, prop)
        hb, hg = prop.fix(linear(xb, xg, layer.fc1))
        hb, hg = prop.record(f"layer{i}.intermediate", prop.fix(activation(hb, hg, layer.activation_fn)))
        ob, og = prop.fix(linear(hb, hg, layer.fc2))
        b, g = prop.fix((b + ob, g + og))
        b, g = prop.record(f"layer{i}", prop.fix_block(_maybe_norm((b, g), layer.final_layer_norm, not before, prop)))
    if decoder.final_layer_norm is not None:
        b, g = prop.fix(layer_norm(b, g, decoder.final_layer_norm, group=prop.group))
    if decoder.project_out is not None:
        b, g = prop.fix(linear(b, g, decoder.project_out))
    return prop.record("final", (b, g))


def opt_logits(lm: nn.Module, beta: Tensor, gamma: Tensor, attention_mask: Tensor, prop: Propagation) -> Pair:
    """Next-token logits as a pair, (batch, time, vocab)."""
    b, g = opt_decoder(lm, beta, gamma, attention_mask, prop)
    return linear(b, g, lm.lm_head)
