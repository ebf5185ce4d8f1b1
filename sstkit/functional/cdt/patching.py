"""Patching baselines for circuit discovery, on the same nodes as :mod:`.circuit` (heads, or heads at positions):
mean-ablation activation patching (one forward per node), path patching (one patched forward per path) and circuit
faithfulness.

A head's output is replaced through a forward pre-hook on the layer's output projection (``out_proj`` of OPT,
``attention.output.dense`` of BERT), whose input holds the heads' contexts side by side.

Example:
    >>> effects = activation_patching(lm, ids, metric, means)  # doctest: +SKIP
    >>> paths = path_patching(lm, ids, metric, means)  # doctest: +SKIP
    >>> faithfulness(lm, ids, metric, means, [(1, 0), (0, 2)])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from itertools import combinations

import torch
from torch import Tensor, nn

from sstkit.functional.cdt.circuit import HeadScores, Metric, Node, all_nodes, head_counts
from sstkit.functional.cdt.opt import is_opt_lm


def _core(model: nn.Module) -> nn.Module:
    return getattr(model, "lm", model)


def output_projection(model: nn.Module, layer: int) -> nn.Linear:
    """The linear layer whose input is layer ``layer``'s concatenated head contexts."""
    core = _core(model)
    if hasattr(core, "model") and hasattr(core.model, "decoder"):
        return core.model.decoder.layers[layer].self_attn.out_proj
    encoder = getattr(core, "encoder", core)
    encoder = encoder if hasattr(encoder, "layer") else encoder.encoder
    return encoder.layer[layer].attention.output.dense


@contextmanager
def patched_heads(model: nn.Module, values: dict[Node, Tensor], record: dict[Node, Tensor] | None = None
                  ) -> Iterator[None]:
    """Replaces each node's context by ``values[node]``: (time, d) or (examples, time, d) for a head (layer, head),
    (d,) or (examples, d) for a head at a position (layer, head, position); whole heads are written first, so a
    position node overrides its head. Fills ``record`` with every head's context (layer, head) as produced (before
    replacement)."""
    layers, heads = head_counts(model)
    handles = []
    for layer in range(layers):
        def hook(_module: nn.Module, args: tuple, layer: int = layer) -> tuple:
            x = args[0]
            split = x.view(*x.shape[:-1], heads, -1)
            if record is not None:
                for head in range(heads):
                    record[(layer, head)] = split[..., head, :].detach().clone()
            mine = sorted(((node, v) for node, v in values.items() if node[0] == layer), key=lambda nv: len(nv[0]))
            if not mine:
                return None
            split = split.clone()
            for node, value in mine:
                index = (node[1],) if len(node) == 2 else (node[2], node[1])  # split is (..., time, heads, d)
                split[(..., *index, slice(None))] = value.to(x.dtype)
            return (split.flatten(-2), *args[1:])

        handles.append(output_projection(model, layer).register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _forward(model: nn.Module, ids: Tensor) -> Tensor:
    core = _core(model)
    out = core(input_ids=ids) if hasattr(core, "lm_head") else model(ids, torch.ones_like(ids))
    return out.logits if hasattr(out, "logits") else out


@torch.no_grad()
def run_metric(model: nn.Module, ids: Tensor, metric: Metric, values: dict[Node, Tensor] | None = None,
               record: dict[Node, Tensor] | None = None) -> Tensor:
    """The metric per example, with ``values`` patched in."""
    with patched_heads(model, values or {}, record):
        return metric(_forward(model, ids))


def _means(means: list[Tensor], nodes: list[Node]) -> dict[Node, Tensor]:
    return {node: means[node[0]][node[1:]] for node in nodes}


@torch.no_grad()
def activation_patching(model: nn.Module, ids: Tensor, metric: Metric, means: list[Tensor],
                        nodes: list[Node] | None = None) -> Tensor:
    """|mean metric change| when each node alone is mean-ablated; one forward per node."""
    nodes = nodes or all_nodes(model)
    clean = run_metric(model, ids, metric).mean()
    return torch.stack([(run_metric(model, ids, metric, _means(means, [n])).mean() - clean).abs() for n in nodes])


@torch.no_grad()
def path_patching(model: nn.Module, ids: Tensor, metric: Metric, means: list[Tensor],
                  nodes: list[Node] | None = None, skip_causal: bool = True) -> HeadScores:
    """Path patching with mean ablation: ``output[s]`` the direct effect of s (all later heads frozen at their clean
    outputs), ``to_head[s, t]`` the effect of the path s → t (t recomputed with s ablated and every other head frozen,
    then patched alone into a clean run); one patched forward per path plus one per sender and receiving head (a
    head's recomputation serves all its positions). In a causal LM a path from position p to an earlier position
    is exactly zero, so with ``skip_causal`` it is not run."""
    nodes = nodes or all_nodes(model)
    clean_acts: dict[Node, Tensor] = {}
    clean = run_metric(model, ids, metric, record=clean_acts).mean()
    causal = skip_causal and is_opt_lm(_core(model))
    output = torch.zeros(len(nodes))
    to_head = torch.zeros(len(nodes), len(nodes))
    for i, sender in enumerate(nodes):
        ablated = {sender: means[sender[0]][sender[1:]]}
        frozen = {n: v for n, v in clean_acts.items() if n[0] > sender[0]}
        output[i] = (run_metric(model, ids, metric, {**frozen, **ablated}).mean() - clean).abs()
        recomputed: dict[Node, Tensor] = {}
        for j, receiver in enumerate(nodes):
            if receiver[0] <= sender[0] or (causal and len(receiver) == len(sender) == 3 and receiver[2] < sender[2]):
                continue
            head = receiver[:2]
            if head not in recomputed:
                seen: dict[Node, Tensor] = {}
                others = {n: v for n, v in clean_acts.items() if n not in (sender[:2], head)}
                run_metric(model, ids, metric, {**others, **ablated}, record=seen)
                recomputed[head] = seen[head]
            value = recomputed[head] if len(receiver) == 2 else recomputed[head][:, receiver[2]]
            to_head[i, j] = (run_metric(model, ids, metric, {receiver: value}).mean() - clean).abs()
    return HeadScores(nodes, output, to_head)


@torch.no_grad()
def faithfulness(model: nn.Module, ids: Tensor, metric: Metric, means: list[Tensor], circuit: list[Node],
                 nodes: list[Node] | None = None) -> float:
    """Share of the metric kept when every head outside ``circuit`` is mean-ablated:
    (m(circuit) − m(no heads)) / (m(full) − m(no heads))."""
    nodes = nodes or all_nodes(model)
    full = run_metric(model, ids, metric).mean()
    none = run_metric(model, ids, metric, _means(means, nodes)).mean()
    kept = run_metric(model, ids, metric, _means(means, [n for n in nodes if n not in circuit])).mean()
    return float((kept - none) / (full - none))


@torch.no_grad()
def minimal_circuit(model: nn.Module, ids: Tensor, metric: Metric, means: list[Tensor], keep: float = 0.9,
                    nodes: list[Node] | None = None, max_nodes: int = 16) -> tuple[list[Node], float]:
    """The smallest set of nodes whose faithfulness reaches ``keep``, by exhaustive search (one forward per subset,
    smallest subsets first; among the subsets of the first size that reaches ``keep``, the most faithful), and its
    faithfulness. A ground truth that no discovery method is asked for: what the model needs, found by brute force,
    so only for up to ``max_nodes`` nodes (2^n subsets)."""
    nodes = nodes or all_nodes(model)
    if len(nodes) > max_nodes:
        raise ValueError(f"minimal_circuit searches 2^n subsets: {len(nodes)} nodes is more than max_nodes={max_nodes}")
    full = run_metric(model, ids, metric).mean()
    none = run_metric(model, ids, metric, _means(means, nodes)).mean()
    for size in range(len(nodes) + 1):
        best, best_share = None, -float("inf")
        for circuit in combinations(nodes, size):
            kept = run_metric(model, ids, metric, _means(means, [n for n in nodes if n not in circuit])).mean()
            share = float((kept - none) / (full - none))
            if share > best_share:
                best, best_share = list(circuit), share
        if best_share >= keep:
            return best, best_share
    return list(nodes), 1.0
