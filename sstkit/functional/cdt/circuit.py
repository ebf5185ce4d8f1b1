"""Circuit discovery with CD-T: which attention heads carry a task, found by decomposition instead of patching.

Nodes are attention heads ``(layer, head)`` or, position-resolved, one head's output at one token position
``(layer, head, position)``; a node's output is its per-head attention context (before the output projection). A
*source* node gets β = its activation − its mean activation over the data set (γ = the mean; for a position node only
at that position), every other part of the network starts in γ; one propagation then gives, for every source at once
(a batch of sources), its β at the output logits and at every later node. Discovery works backwards from the output:

1. score every node by |mean over examples of ``metric(β-logits)``|, keep the top ``k``: the first frontier;
2. score every earlier node by its β at the frontier's nodes (‖β‖ relative to the frontier node's ‖activation‖),
   keep the top ``k`` of those: the next frontier; repeat until no earlier node is left.

Example:
    >>> means = head_means(lm, ids)  # doctest: +SKIP
    >>> scores = cdt_head_scores(lm, ids, metric, means)  # doctest: +SKIP
    >>> circuit = backward_circuit(scores, k=2)  # doctest: +SKIP
    >>> per_position = cdt_head_scores(lm, ids, metric, means, nodes=all_nodes(lm, positions=ids.shape[1]))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sstkit.functional.cdt.decompose import Decomposition, decompose

Node = tuple[int, ...]  # (layer, head) or (layer, head, position)
Metric = Callable[[Tensor], Tensor]  # logits (examples, ..., vocab or labels) -> (examples,)


def head_counts(model: nn.Module) -> tuple[int, int]:
    """(layers, heads per layer) of an OPT LM or BERT-type encoder / classifier."""
    core = getattr(model, "lm", model)
    if hasattr(core, "model") and hasattr(core.model, "decoder"):
        return len(core.model.decoder.layers), int(core.config.num_attention_heads)
    encoder = getattr(core, "encoder", core)
    config = encoder.config
    return int(config.num_hidden_layers), int(config.num_attention_heads)


def all_nodes(model: nn.Module, positions: int | Sequence[int] | None = None) -> list[Node]:
    """Every (layer, head) of the model, layer-major; with ``positions`` (a sequence length or a list of positions)
    every (layer, head, position)."""
    layers, heads = head_counts(model)
    if positions is None:
        return [(layer, head) for layer in range(layers) for head in range(heads)]
    where = range(positions) if isinstance(positions, int) else list(positions)
    return [(layer, head, p) for layer in range(layers) for head in range(heads) for p in where]


def node_value(per_layer: Tensor, node: Node) -> Tensor:
    """The part of one layer's head tensor that is ``node``: (batch, heads, time, d) -> (batch, time, d) for a head,
    (batch, d) for a head at a position (a mean without the batch axis is ``means[layer][node[1:]]``)."""
    return per_layer[(slice(None), *node[1:])]


@torch.no_grad()
def clean_states(model: nn.Module, inputs: Tensor | dict[str, Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """One clean pass: per layer, the head contexts (examples, heads, time, head_dim) and the hidden state entering
    the layer (examples, time, hidden), the cached prefix from which sources of that layer start."""
    dec = decompose(model, inputs, relevant=None, trace=True)
    layers, _ = head_counts(model)
    heads = [sum(dec.trace[f"layer{i}.heads"]) for i in range(layers)]
    entering = [sum(dec.trace["embeddings" if i == 0 else f"layer{i - 1}"]) for i in range(layers)]
    return heads, entering


def head_activations(model: nn.Module, inputs: Tensor | dict[str, Tensor]) -> list[Tensor]:
    """Per-layer head contexts of the clean run, each (examples, heads, time, head_dim)."""
    return clean_states(model, inputs)[0]


def head_means(model: nn.Module, inputs: Tensor | dict[str, Tensor]) -> list[Tensor]:
    """Mean head context per layer over the examples, each (heads, time, head_dim) (position-wise, as the paper)."""
    return [act.mean(0) for act in head_activations(model, inputs)]


@dataclass
class HeadScores:
    """CD-T relevance: ``output[s]`` of node s at the metric, ``to_head[s, t]`` of node s at node t's output."""

    nodes: list[Node]
    output: Tensor
    to_head: Tensor


@dataclass
class SourcePass:
    """One batched propagation of ``sources`` (all of one layer): the decomposed output and, per later layer, the
    (β, γ) of every head context, each (examples, sources, heads, time, head_dim)."""

    sources: list[Node]
    output: Decomposition
    heads: dict[int, tuple[Tensor, Tensor]]


@torch.no_grad()
def source_pass(model: nn.Module, inputs: Tensor | dict[str, Tensor], sources: list[Node], means: list[Tensor],
                entering: Tensor, attention: str = "total") -> SourcePass:
    """Propagates the sources (nodes of one layer) together, one batch row per (example, source), from ``entering``
    (the clean hidden state entering their layer, from :func:`clean_states`)."""
    layer = sources[0][0]
    if any(node[0] != layer for node in sources):
        raise ValueError(f"source_pass takes sources of one layer, got {sources}")
    ids = inputs["input_ids"] if isinstance(inputs, dict) else inputs
    n, t = ids.shape
    k = len(sources)
    heads: dict[int, tuple[Tensor, Tensor]] = {}

    def hook(at: int, beta: Tensor, gamma: Tensor) -> tuple[Tensor, Tensor]:
        if at == layer:
            total = beta + gamma
            beta, gamma = beta.clone(), gamma.clone()
            mean = means[layer].to(total.dtype)
            for s, node in enumerate(sources):
                index = (torch.arange(s, n * k, k), *node[1:])  # example-major batch: the rows of source s
                beta[index] = total[index] - mean[node[1:]]
                gamma[index] = mean[node[1:]].expand_as(gamma[index])
        heads[at] = (beta.view(n, k, *beta.shape[1:]), gamma.view(n, k, *gamma.shape[1:]))
        return beta, gamma

    dec = decompose(model, inputs, relevant=torch.zeros(k, t, dtype=torch.bool), head_hook=hook,
                    attention=attention, start=(layer, entering))
    return SourcePass(sources, dec, heads)


@torch.no_grad()
def cdt_head_scores(model: nn.Module, inputs: Tensor | dict[str, Tensor], metric: Metric, means: list[Tensor],
                    nodes: list[Node] | None = None, sources_per_pass: int = 64,
                    attention: str = "total") -> HeadScores:
    """One batched CD-T pass per ``sources_per_pass`` sources gives every source's β at the output and at all nodes.

    ``inputs`` are the examples (same length, ids (examples, time)); ``means`` from :func:`head_means`; ``nodes``
    heads (default: all) or heads at positions (``all_nodes(model, positions=time)``).
    """
    nodes = nodes or all_nodes(model)
    output = torch.zeros(len(nodes))
    to_head = torch.zeros(len(nodes), len(nodes))
    clean, entering = clean_states(model, inputs)
    scale = torch.stack([node_value(clean[t[0]], t).norm(dim=-1).mean().clamp(min=1e-8) for t in nodes])
    # Sources of one layer share passes that start from the cached clean state entering that layer.
    by_layer: dict[int, list[int]] = {}
    for i, node in enumerate(nodes):
        by_layer.setdefault(node[0], []).append(i)
    chunks = [rows[j:j + sources_per_pass] for rows in by_layer.values() for j in range(0, len(rows), sources_per_pass)]
    for rows in chunks:
        result = source_pass(model, inputs, [nodes[i] for i in rows], means, entering[nodes[rows[0]][0]], attention)
        later = [j for j, t in enumerate(nodes) if t[0] > nodes[rows[0]][0]]
        for s, row in enumerate(rows):
            output[row] = metric(result.output.beta[:, s]).mean().abs()
            for j in later:
                target = nodes[j]
                beta = node_value(result.heads[target[0]][0][:, s], target)
                to_head[row, j] = beta.norm(dim=-1).mean() / scale[j]
    return HeadScores(nodes, output, to_head)


def backward_circuit(scores: HeadScores, k: int = 2) -> list[Node]:
    """Top ``k`` nodes at the output, then top ``k`` earlier nodes at the last kept ones, until none is left."""
    nodes = scores.nodes
    frontier = [int(i) for i in scores.output.argsort(descending=True)[:k]]
    circuit = list(frontier)
    while frontier:
        deepest = max(nodes[t][0] for t in frontier)
        candidates = [s for s in range(len(nodes)) if s not in circuit and nodes[s][0] < deepest]
        if not candidates:
            break
        relevance = scores.to_head[:, frontier].sum(1)
        ranked = sorted(candidates, key=lambda s: -float(relevance[s]))
        frontier = [s for s in ranked[:k] if relevance[s] > 0]
        circuit += frontier
    return [nodes[i] for i in circuit]


def circuit_ranking(scores: HeadScores, k: int = 2) -> Tensor:
    """A score per node for ROC AUC: nodes of :func:`backward_circuit` above all others, in their order of
    inclusion; the rest by their best relevance (output, or at a circuit node) scaled into [0, 1)."""
    chosen = backward_circuit(scores, k)
    index = {node: i for i, node in enumerate(scores.nodes)}
    out = scores.output / scores.output.max().clamp(min=1e-12)
    rows = [index[c] for c in chosen]
    to_circuit = scores.to_head[:, rows].max(1).values if rows else torch.zeros_like(out)
    to_circuit = to_circuit / to_circuit.max().clamp(min=1e-12)
    rank = torch.maximum(out, to_circuit) * 0.999
    for order, node in enumerate(chosen):
        rank[index[node]] = 2.0 + len(chosen) - order
    return rank
