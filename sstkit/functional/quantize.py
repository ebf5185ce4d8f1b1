"""Putting Q-BERT's fake quantisers into any model, setting their bits, and measuring the quantised model's size.

Every ``nn.Linear`` becomes a :class:`~sstkit.nn.quant.QuantLinear` and every ``nn.Embedding`` a
:class:`~sstkit.nn.quant.QuantEmbedding`, except the modules matched by ``exclude`` (default: the classification
head, which stays full precision). Linears inside a block (see :func:`sstkit.functional.hessian.discover_blocks`)
get that block's bits, other linears ``other_bits``, embeddings ``embedding_bits``. Attention projections
(``query/key/value``, ``q_proj/k_proj/v_proj``) are grouped per head first; the head count is read from their
parent module (``num_attention_heads`` in BERT, ``num_heads`` in OPT), so no model family is special-cased.

Swapping is idempotent: a second call finds the wrappers and only updates their bits.

Example:
    >>> wrapped = apply_quantization(model, {"encoder.encoder.layer.0": 3}, num_groups=128)  # doctest: +SKIP
    >>> model_size_mb(model)                                                                 # doctest: +SKIP
    {'size_mb': 5.1, 'size_mb_no_emb': 1.2, 'fp32_mb': 86.7}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from sstkit.functional.surgery import name_matches, replace_module, select_linears, select_modules
from sstkit.nn.quant import QuantEmbedding, QuantLinear, check_bits

# The task head stays full precision, as in the paper; matched on the whole dotted module name.
DEFAULT_EXCLUDE = ("re:(^|\\.)(head|heads|classifier|lm_head|score|qa_outputs)(\\.|$)",)
HEAD_PROJECTIONS = "re:(^|\\.)(query|key|value|q_proj|k_proj|v_proj)$"
QuantModule = QuantLinear | QuantEmbedding


def block_of(name: str, blocks: Sequence[str]) -> str | None:
    """The block (name prefix) a module belongs to, or None."""
    return next((b for b in blocks if name.startswith(b + ".")), None)


def _heads(model: nn.Module, name: str) -> int | None:
    if not name_matches(name, [HEAD_PROJECTIONS]):
        return None
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    for attr in ("num_attention_heads", "num_heads", "n_heads"):
        value = getattr(parent, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def quant_modules(model: nn.Module) -> dict[str, QuantModule]:
    """The fake-quant wrappers of a model, by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear | QuantEmbedding)}


def swap_quant_modules(model: nn.Module, num_groups: int = 128,
                       exclude: Sequence[str] = DEFAULT_EXCLUDE) -> dict[str, QuantModule]:
    """Wraps every linear and embedding not excluded (full precision until bits are set); idempotent."""
    for name, linear in select_linears(model, ["*"], exclude, warn_if_empty=False, method="qbert"):
        replace_module(model, name, QuantLinear(linear, bits=None, num_groups=num_groups,
                                                heads=_heads(model, name)))
    for name, emb in select_modules(model, ["*"], exclude, nn.Embedding):
        if not isinstance(emb, QuantEmbedding):
            replace_module(model, name, QuantEmbedding(emb, bits=None, num_groups=num_groups))
    return quant_modules(model)


def set_quant_bits(model: nn.Module, block_bits: Mapping[str, int | None], other_bits: int | None = 8,
                   embedding_bits: int | None = 8, act_bits: int | None = None,
                   num_groups: int | None = None) -> dict[str, int | None]:
    """Sets the bits of every wrapper (None everywhere = the full-precision model); returns bits per module."""
    for value in (*block_bits.values(), other_bits, embedding_bits, act_bits):
        check_bits(value)
    blocks = list(block_bits)
    out: dict[str, int | None] = {}
    for name, module in quant_modules(model).items():
        if num_groups is not None:
            module.num_groups = num_groups
        if isinstance(module, QuantEmbedding):
            module.bits = embedding_bits
        else:
            block = block_of(name, blocks)
            module.bits = block_bits[block] if block is not None else other_bits
            module.act_bits = act_bits if module.bits is not None else None
        out[name] = module.bits
    return out


def apply_quantization(model: nn.Module, block_bits: Mapping[str, int | None], num_groups: int = 128,
                       other_bits: int | None = 8, embedding_bits: int | None = 8, act_bits: int | None = None,
                       exclude: Sequence[str] = DEFAULT_EXCLUDE) -> dict[str, int | None]:
    """Swap (idempotent) and set bits in one call; returns the bits of every wrapped module.

    Example:
        >>> bits = apply_quantization(model, {"encoder.encoder.layer.0": 2}, act_bits=8)  # doctest: +SKIP
    """
    swap_quant_modules(model, num_groups, exclude)
    return set_quant_bits(model, block_bits, other_bits, embedding_bits, act_bits, num_groups)


def block_weight_counts(model: nn.Module, blocks: Sequence[str]) -> dict[str, int]:
    """Number of quantisable weights (linear weight matrices) in each block, for size budgets."""
    counts = {b: 0 for b in blocks}
    for name, module in model.named_modules():
        block = block_of(name, blocks)
        if block is not None and isinstance(module, nn.Linear | QuantLinear):
            counts[block] += module.weight.numel()
    return counts


def model_size_mb(model: nn.Module) -> dict[str, float]:
    """Storage of the quantised model in MB (2^20 bytes): k bits per quantised weight plus an fp32 scale and
    zero point per group, 32 bits for everything else; also without the embedding tables, and in fp32."""
    quantized: dict[int, tuple[int, int, bool]] = {}
    embedding_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, QuantLinear | QuantEmbedding) and module.bits is not None:
            groups = int(module.group_index().max()) + 1
            quantized[id(module.weight)] = (module.bits, groups, isinstance(module, QuantEmbedding))
        if isinstance(module, nn.Embedding | QuantEmbedding):
            embedding_ids.add(id(module.weight))
    total = no_emb = fp32 = 0
    for param in model.parameters():
        bits, groups, _ = quantized.get(id(param), (32, 0, False))
        size = bits * param.numel() + 64 * groups
        total += size
        fp32 += 32 * param.numel()
        if id(param) not in embedding_ids:
            no_emb += size
    mb = 8 * 2**20
    return {"size_mb": total / mb, "size_mb_no_emb": no_emb / mb, "fp32_mb": fp32 / mb}
