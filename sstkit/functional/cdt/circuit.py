"""Circuit discovery with CD-T: which attention heads carry a task, found by decomposition instead of patching.

Nodes are attention heads ``(layer, head)``; a node's output is its per-head attention context (before the output
projection). A *source* node gets β = its activation − its mean activation over the data set (γ = the mean), every
other part of the network starts in γ; one propagation then gives, for every source at once (a batch of sources),
its β at the output logits and at every later head. Discovery works backwards from the output:

1. score every node by |mean over examples of ``metric(β-logits)``|, keep the top ``k``: the first frontier;
2. score every earlier node by its β at the frontier's heads (‖β‖ relative to the frontier head's ‖activation‖),
   keep the top ``k`` of those: the next frontier; repeat until no earlier node is left.

Example:
    >>> means = head_means(lm, ids)  # doctest: +SKIP
    >>> scores = cdt_head_scores(lm, ids, metric, means)  # doctest: +SKIP
    >>> circuit = backward_circuit(scores, k=2)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sstkit.functional.cdt.decompose import decompose

Node = tuple[int, int]
Metric = Callable[[Tensor], Tensor]  # logits (examples, ..., vocab or labels) -> (examples,)


def head_counts(model: nn.Module) -> tuple[int, int]:
    """(layers, heads per layer) of an OPT LM or BERT-type encoder / classifier."""
    core = getattr(model, "lm", model)
    if hasattr(core, "model") and hasattr(core.model, "decoder"):
        return len(core.model.decoder.layers), int(core.config.num_attention_heads)
    encoder = getattr(core, "encoder", core)
    config = encoder.config
    return int(config.num_hidden_layers), int(config.num_attention_heads)


def all_nodes(model: nn.Module) -> list[Node]:
    """Every (layer, head) of the model, layer-major."""
    layers, heads = head_counts(model)
    return [(layer, head) for layer in range(layers) for head in range(heads)]


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


@torch.no_grad()
def cdt_head_scores(model: nn.Module, inputs: Tensor | dict[str, Tensor], metric: Metric, means: list[Tensor],
                    nodes: list[Node] | None = None, sources_per_pass: int = 64,
                    attention: str = "total") -> HeadScores:
    """One batched CD-T pass per ``sources_per_pass`` sources gives every source's β at the output and at all heads.

    ``inputs`` are the examples (same length, ids (examples, time)); ``means`` from :func:`head_means`.
    """
    nodes = nodes or all_nodes(model)
    ids = inputs["input_ids"] if isinstance(inputs, dict) else inputs
    n, t = ids.shape
    output = torch.zeros(len(nodes))
    to_head = torch.zeros(len(nodes), len(nodes))
    index = {node: i for i, node in enumerate(nodes)}
    _, entering = clean_states(model, inputs)
    # Sources of one layer share passes that start from the cached clean state entering that layer.
    by_layer: dict[int, list[int]] = {}
    for i, node in enumerate(nodes):
        by_layer.setdefault(node[0], []).append(i)
    chunks = [rows[j:j + sources_per_pass] for rows in by_layer.values() for j in range(0, len(rows), sources_per_pass)]
    for rows_of_chunk in chunks:
        chunk = [nodes[i] for i in rows_of_chunk]
        k = len(chunk)
        seen: dict[int, Tensor] = {}
        baseline: dict[int, Tensor] = {}

        def hook(layer: int, beta: Tensor, gamma: Tensor, chunk: list[Node] = chunk, k: int = k,
                 seen: dict = seen, baseline: dict = baseline) -> tuple:
            total = beta + gamma
            beta, gamma = beta.clone(), gamma.clone()
            mean = means[layer].to(total.dtype)
            for s, (src_layer, head) in enumerate(chunk):
                if src_layer == layer:
                    rows = torch.arange(s, n * k, k)  # example-major batch: rows of source s
                    beta[rows, head] = total[rows, head] - mean[head]
                    gamma[rows, head] = mean[head].expand_as(gamma[rows, head])
            seen[layer] = beta.view(n, k, *beta.shape[1:])
            baseline[layer] = total.view(n, k, *total.shape[1:])[:, 0]
            return beta, gamma

        layer = chunk[0][0]
        dec = decompose(model, inputs, relevant=torch.zeros(k, t, dtype=torch.bool), head_hook=hook,
                        attention=attention, start=(layer, entering[layer]))
        for s, node in enumerate(chunk):
            output[rows_of_chunk[s]] = metric(dec.beta[:, s]).mean().abs()
            for target in nodes:
                if target[0] > node[0]:
                    beta = seen[target[0]][:, s, target[1]]
                    scale = baseline[target[0]][:, target[1]].norm(dim=-1).mean().clamp(min=1e-8)
                    to_head[rows_of_chunk[s], index[target]] = beta.norm(dim=-1).mean() / scale
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
