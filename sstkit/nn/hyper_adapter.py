r"""Bottleneck adapters whose weights come from a bank: a task-conditioned hypernetwork, or one set per task.

The adapter (Houlsby et al., 2019; HyperFormer, Karimi Mahabadi et al., 2021) after a sublayer's output
projection is

    a(x) = x + W_up · act(W_down · LN(x) + b_down) + b_up,     W_down: r×d, W_up: d×r, LN with (γ, β)

:class:`HyperAdapterNetwork` emits ``(W_down, b_down, W_up, b_up, γ, β)`` for adapter position ``p`` of layer ``l``
from the source embedding of the task ``t`` (and, optionally, the language ``g``, as in Hyper-X):

    s = concat(z_t, e_l, e_p[, e_g]),   h = MLP(s),   [W_down|b_down] = G_down h,   [W_up|b_up] = G_up h,   [γ|β] = G_ln h

``G_up`` starts at zero, so every adapter starts as the identity and a model with adapters computes exactly what
it did before. Only ``z_t`` is per task: the network's size grows by ``task_dim`` numbers per task.
:class:`PerTaskAdapters` (the plain-adapter baseline) keeps one full set of adapter weights per task instead.

A bank serves a batch of task ids (one per example): weights are made once per distinct task in the batch and
applied per example, so batches may mix tasks. :func:`set_condition` tells every bank in a model which tasks
(and languages) the next forward pass is for; with none set, every example is task 0.

Example:
    >>> bank = HyperAdapterNetwork(num_tasks=3, hidden_size=32, num_layers=2, bottleneck=4)
    >>> slot = AdaptedSublayer(nn.Linear(32, 32), bank, layer=1, position=0)
    >>> bank.condition(torch.tensor([0, 2]))
    >>> slot(torch.randn(2, 5, 32)).shape
    torch.Size([2, 5, 32])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (W_down (U,r,d), b_down (U,r), W_up (U,d,r), b_up (U,d), γ (U,d), β (U,d)) for U distinct tasks.
AdapterWeights = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]
ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "swish": F.silu}


class AdapterBank(nn.Module):
    """What an adapter slot asks for its weights; holds the task (and language) ids of the current batch."""

    def __init__(self, num_tasks: int, hidden_size: int, num_layers: int, bottleneck: int, num_positions: int,
                 activation: str) -> None:  # fmt: skip
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        for key, value in (("num_tasks", num_tasks), ("hidden_size", hidden_size), ("num_layers", num_layers),
                           ("bottleneck", bottleneck), ("num_positions", num_positions)):  # fmt: skip
            if value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        self.num_tasks, self.hidden_size, self.num_layers = num_tasks, hidden_size, num_layers
        self.bottleneck, self.num_positions, self.activation = bottleneck, num_positions, activation
        self.task_ids: Tensor | None = None
        self.language_ids: Tensor | None = None

    def condition(self, task_ids: Tensor | None, language_ids: Tensor | None = None) -> None:
        """Sets the per-example task (and language) ids used by the next forward passes (None: all task 0)."""
        for name, ids, limit in (("task", task_ids, self.num_tasks), ("language", language_ids, self.num_languages)):
            if ids is not None and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= limit):
                raise ValueError(f"{name} ids must lie in [0, {limit}), got {ids.tolist()}")
        self.task_ids, self.language_ids = task_ids, language_ids

    @property
    def num_languages(self) -> int:
        return 1

    def weights(self, layer: int, position: int, device: torch.device) -> tuple[AdapterWeights, Tensor | None]:
        """The adapter weights for the distinct (task, language) pairs of the batch and each example's row in them.

        The index is None when one set serves the whole batch (broadcast instead of a per-example gather).
        """
        tasks = self.task_ids if self.task_ids is not None else torch.zeros(1, dtype=torch.long, device=device)
        keys = tasks.long().to(device)
        if self.language_ids is not None:
            keys = keys * self.num_languages + self.language_ids.long().to(device)
        unique, index = torch.unique(keys, return_inverse=True)
        made = self.make(layer, position, unique // self.num_languages, unique % self.num_languages)
        return made, (None if len(unique) == 1 else index)

    def make(self, layer: int, position: int, tasks: Tensor, languages: Tensor) -> AdapterWeights:
        """Adapter weights for each row of ``tasks`` / ``languages``; subclasses implement it."""
        raise NotImplementedError


class HyperAdapterNetwork(AdapterBank):
    """One hypernetwork shared by all tasks, layers and adapter positions (HyperFormer / Hyper-X).

    Args:
        num_tasks: rows of the task embedding ``z_t`` (grow later with :meth:`add_task`).
        hidden_size: ``d``, the encoder's width.
        num_layers: encoder layers (rows of the layer embedding).
        bottleneck: ``r``, the adapter's inner width.
        num_positions: adapter positions per layer (2: after attention and after the FFN).
        num_languages: rows of the language embedding; 0 for none (tasks carry no language).
        task_dim: width of ``z_t``, ``e_l``, ``e_p`` and ``e_g``.
        hyper_dim: width of ``h``, the projected source embedding the generators read.
        activation: the adapter's ``act``.
    """

    def __init__(self, num_tasks: int, hidden_size: int, num_layers: int, bottleneck: int = 16,
                 num_positions: int = 2, num_languages: int = 0, task_dim: int = 64, hyper_dim: int = 32,
                 activation: str = "relu") -> None:  # fmt: skip
        super().__init__(num_tasks, hidden_size, num_layers, bottleneck, num_positions, activation)
        if num_languages < 0:
            raise ValueError(f"num_languages must be >= 0, got {num_languages}")
        self.task_dim, self.hyper_dim, self._languages = task_dim, hyper_dim, num_languages
        self.task_embeddings = nn.Parameter(torch.randn(num_tasks, task_dim) * 0.1)
        self.layer_embeddings = nn.Embedding(num_layers, task_dim)
        self.position_embeddings = nn.Embedding(num_positions, task_dim)
        self.language_embeddings = nn.Embedding(num_languages, task_dim) if num_languages else None
        sources = 4 if num_languages else 3
        self.projector = nn.Sequential(nn.Linear(sources * task_dim, hyper_dim), nn.ReLU(),
                                       nn.Linear(hyper_dim, hyper_dim))  # fmt: skip
        d, r = hidden_size, bottleneck
        self.down_generator = nn.Linear(hyper_dim, r * d + r)
        self.up_generator = nn.Linear(hyper_dim, d * r + d)
        self.norm_generator = nn.Linear(hyper_dim, 2 * d)
        with torch.no_grad():
            # W_down of the order of nn.Linear's own init (1/sqrt(d)) for h of unit scale.
            nn.init.normal_(self.down_generator.weight, std=1.0 / math.sqrt(d * hyper_dim))
            self.down_generator.bias.zero_()
            nn.init.zeros_(self.up_generator.weight)  # adapters start as the identity: step 0 = base model
            nn.init.zeros_(self.up_generator.bias)
            nn.init.normal_(self.norm_generator.weight, std=0.01 / math.sqrt(hyper_dim))
            self.norm_generator.bias.copy_(torch.cat([torch.ones(d), torch.zeros(d)]))  # γ ≈ 1, β ≈ 0

    @property
    def num_languages(self) -> int:
        return max(1, self._languages)

    def add_task(self, init: str = "mean") -> int:
        """Appends one task embedding (``mean`` of the others, or ``random``) and returns its id.

        Few-shot transfer to a new task then trains only this row (:func:`sstkit.functional.hyper_adapters
        .train_only_task`); every other weight of the network is shared and stays as it is.
        """
        with torch.no_grad():
            old = self.task_embeddings
            row = old.mean(0, keepdim=True) if init == "mean" else torch.randn(1, self.task_dim, device=old.device) * 0.1
            self.task_embeddings = nn.Parameter(torch.cat([old, row.to(old)]))
        self.num_tasks += 1
        return self.num_tasks - 1

    def make(self, layer: int, position: int, tasks: Tensor, languages: Tensor) -> AdapterWeights:
        n, d, r = len(tasks), self.hidden_size, self.bottleneck
        device = self.task_embeddings.device
        parts = [self.task_embeddings[tasks.to(device)],
                 self.layer_embeddings.weight[layer].expand(n, -1),
                 self.position_embeddings.weight[position].expand(n, -1)]  # fmt: skip
        if self.language_embeddings is not None:
            parts.append(self.language_embeddings(languages.to(device)))
        h = self.projector(torch.cat(parts, dim=-1))
        down, up, norm = self.down_generator(h), self.up_generator(h), self.norm_generator(h)
        return (down[:, : r * d].view(n, r, d), down[:, r * d :], up[:, : d * r].view(n, d, r), up[:, d * r :],
                norm[:, :d], norm[:, d:])  # fmt: skip


class PerTaskAdapters(AdapterBank):
    """The plain-adapter baseline: independent adapter weights for every (task, layer, position).

    Same adapter, same zero-initialised ``W_up``, but ``num_tasks × num_layers × num_positions`` full sets.

    Args: as :class:`HyperAdapterNetwork` (no embeddings, no generators).
    """

    def __init__(self, num_tasks: int, hidden_size: int, num_layers: int, bottleneck: int = 16,
                 num_positions: int = 2, activation: str = "relu") -> None:  # fmt: skip
        super().__init__(num_tasks, hidden_size, num_layers, bottleneck, num_positions, activation)
        shape, d, r = (num_tasks, num_layers, num_positions), hidden_size, bottleneck
        bound = 1.0 / math.sqrt(d)  # nn.Linear's default init of W_down
        self.down_weight = nn.Parameter(torch.empty(*shape, r, d).uniform_(-bound, bound))
        self.down_bias = nn.Parameter(torch.zeros(*shape, r))
        self.up_weight = nn.Parameter(torch.zeros(*shape, d, r))
        self.up_bias = nn.Parameter(torch.zeros(*shape, d))
        self.norm_weight = nn.Parameter(torch.ones(*shape, d))
        self.norm_bias = nn.Parameter(torch.zeros(*shape, d))

    def make(self, layer: int, position: int, tasks: Tensor, languages: Tensor) -> AdapterWeights:
        t = tasks.to(self.down_weight.device)
        return tuple(p[t, layer, position] for p in (self.down_weight, self.down_bias, self.up_weight,  # type: ignore[return-value]
                                                     self.up_bias, self.norm_weight, self.norm_bias))  # fmt: skip


def apply_adapter(x: Tensor, weights: AdapterWeights, index: Tensor | None, activation: str = "relu") -> Tensor:
    """``x + W_up · act(W_down · LN(x) + b_down) + b_up`` with one weight set per batch or per example.

    Args:
        x: (batch, ..., d) sublayer output.
        weights: from :meth:`AdapterBank.weights`, leading dimension U (distinct tasks).
        index: (batch,) row of each example in ``weights``, or None when U = 1.
        activation: ``relu``, ``gelu`` or ``swish``.
    """
    down_w, down_b, up_w, up_b, gamma, beta = weights
    if index is None:
        down_w, down_b, up_w, up_b, gamma, beta = (w[0] for w in weights)
        z = F.layer_norm(x, (x.shape[-1],), gamma.to(x.dtype), beta.to(x.dtype))
        z = ACTIVATIONS[activation](F.linear(z, down_w.to(x.dtype), down_b.to(x.dtype)))
        return x + F.linear(z, up_w.to(x.dtype), up_b.to(x.dtype))
    # Per example: gather each example's set and contract over the feature axis.
    shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (-1,)
    z = F.layer_norm(x, (x.shape[-1],)) * gamma[index].view(shape).to(x.dtype) + beta[index].view(shape).to(x.dtype)
    flat = z.reshape(x.shape[0], -1, x.shape[-1])
    h = torch.einsum("bnd,brd->bnr", flat, down_w[index].to(x.dtype)) + down_b[index].unsqueeze(1).to(x.dtype)
    h = ACTIVATIONS[activation](h)
    out = torch.einsum("bnr,bdr->bnd", h, up_w[index].to(x.dtype)) + up_b[index].unsqueeze(1).to(x.dtype)
    return x + out.view_as(x)


class AdaptedSublayer(nn.Module):
    """A sublayer's output projection followed by an adapter whose weights the shared bank provides.

    The bank is *not* registered as a child: it is one module shared by every slot and lives once on the model
    (registered there by the surgery), so its tensors appear once in a state dict.

    Args:
        base: the wrapped module (e.g. ``BertSelfOutput.dense``), kept as ``base``.
        bank: the :class:`AdapterBank` serving this slot.
        layer: encoder layer index ``l``.
        position: adapter position ``p`` (0 after attention, 1 after the FFN).
    """

    def __init__(self, base: nn.Module, bank: AdapterBank, layer: int, position: int) -> None:
        super().__init__()
        self.base, self.layer, self.position = base, layer, position
        object.__setattr__(self, "bank", bank)

    def forward(self, x: Tensor) -> Tensor:
        y = self.base(x)
        weights, index = self.bank.weights(self.layer, self.position, y.device)
        if index is not None and index.shape[0] != y.shape[0]:
            raise ValueError(f"{index.shape[0]} task ids for a batch of {y.shape[0]} examples")
        return apply_adapter(y, weights, index, self.bank.activation)

    def extra_repr(self) -> str:
        return f"layer={self.layer}, position={self.position}, bank={type(self.bank).__name__}"


def set_condition(model: nn.Module, task_ids: Tensor | None, language_ids: Tensor | None = None) -> int:
    """Tells every :class:`AdapterBank` in ``model`` the task (and language) of each example of the next batch.

    Returns the number of banks conditioned (0 for a model without adapters, which is not an error: a multitask
    model conditions whatever method is on it).

    Example:
        >>> set_condition(model, batch["task_id"])  # doctest: +SKIP
        1
    """
    banks = [m for m in model.modules() if isinstance(m, AdapterBank)]
    for bank in banks:
        bank.condition(task_ids, language_ids)
    return len(banks)
