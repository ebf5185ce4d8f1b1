r"""Sparse Spectral Training (SST): the method core, usable in a plain PyTorch loop or from a callback.

Zhao et al., "Sparse Spectral Training and Inference on Euclidean and Hyperbolic Neural Networks", ICML 2025.

Symbols (code names in brackets). A selected ``nn.Linear`` has weight ``W`` (out×in), ``k = min(out, in)``:

* ``W = U diag(s) Vh`` from the full reduced SVD of the initial (or pretrained) weight; all ``k`` triplets are
  kept, so at step 0 the network computes exactly what the dense one did. ``u_i = U[:, i]``, ``v_iᵀ = Vh[i]``.
* ``S`` (``active_indices``), ``|S| = r`` (``rank``): the sampled triplets. ``U_S`` (``U_active``, out×r) and
  ``Vh_S`` (``Vh_active``, r×in) are the only trainable factor parameters; the others sit in the buffers ``U``,
  ``Vh`` and receive no gradient, momentum or weight decay. All of ``s`` trains.
* ``G = ∂L/∂W``. Gradients, computed in closed form (never by dividing by ``s_i``, which may be 0):

  - ``∂L/∂s_i = u_iᵀ G v_i`` for every ``i``;
  - enhanced (default): ``∂L/∂U_S = G Vh_Sᵀ``, ``∂L/∂Vh_S = U_Sᵀ G`` (the ``s_i`` factor dropped);
  - true (``enhanced_grad=False``): ``∂L/∂U_S = G Vh_Sᵀ diag(s_S)``, ``∂L/∂Vh_S = diag(s_S) U_Sᵀ G``.

* After each optimizer step: ``s ← max(s, 0)``, ``u_i ← u_i / ‖u_i‖``, ``v_i ← v_i / ‖v_i‖`` for ``i ∈ S``.
* Sampling ``r`` distinct indices without replacement, by ``rule``:

  - ``"mixed"``: ``p_i = ½ (1/k + s_i / Σ_j s_j)`` (uniform when ``Σ s = 0``), so zeroed values can return;
  - ``"multinomial"``: ``p_i ∝ s_i``; ``"uniform"``: ``p_i = 1/k``; ``"top"``: the ``r`` largest ``s_i``.

* Schedule: an iteration keeps ``S`` for ``T3`` optimizer steps (``steps_per_iteration``); a round is
  ``T2 = ⌈k/r⌉`` iterations (:func:`round_length`); at a round's end ``U, s, Vh ← SVD(U diag(s) Vh)`` restores
  orthogonality, then sampling restarts.
* Inference: ``W = U diag(s) Vh`` as a dense ``nn.Linear`` (:func:`merge_sst`), optionally keeping only the
  largest ``k - ⌊prune_fraction·k⌋`` singular values.

Example:
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    >>> layers = apply_sst(model, rank=0.25, patterns=["*"], seed=0)
    >>> opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    >>> for step in range(1, 4):
    ...     model(torch.randn(8, 32)).pow(2).mean().backward()
    ...     opt.step(); opt.zero_grad()
    ...     _ = sst_step_end(layers, step, steps_per_iteration=2, optimizer=opt)
    >>> _ = merge_sst(model)
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from sstkit.functional.optim_state import reset_adam_state
from sstkit.functional.surgery import replace_module, select_linears, select_modules, warn_no_match
from sstkit.nn.sampling import RULES as RULES
from sstkit.nn.sampling import sample_indices as sample_indices  # part of this core's API
from sstkit.nn.spectral import ForwardMode, SpectralLinear


def resolve_rank(rank: int | float, k: int) -> int:
    """``r`` for a layer with ``k`` singular values: an int (capped at ``k``) or a fraction in ``(0, 1]`` of ``k``.

    Example:
        >>> resolve_rank(0.25, 384), resolve_rank(64, 2)
        (96, 2)
    """
    if isinstance(rank, bool) or not isinstance(rank, int | float):
        raise TypeError(f"rank must be an int or a float fraction, got {rank!r}")
    if isinstance(rank, float):
        if not 0.0 < rank <= 1.0:
            raise ValueError(f"a float rank is a fraction of k and must be in (0, 1], got {rank}")
        return max(1, round(rank * k))
    if rank < 1:
        raise ValueError(f"an int rank must be >= 1, got {rank}")
    # Heads and small projections have k below a global rank; training all their triplets is the sane reading.
    return min(rank, k)


def layer_seed(seed: int, name: str) -> int:
    """A per-layer seed that depends on the layer's name, not its position, so adding layers changes no other.

    Example:
        >>> layer_seed(0, "encoder.layer.0.attention.self.query") == layer_seed(0, "encoder.layer.0.attention.self.query")
        True
    """
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


def find_spectral_layers(model: nn.Module) -> dict[str, SpectralLinear]:
    """Every :class:`SpectralLinear` in ``model`` by name (e.g. after ``load_from_checkpoint``).

    Example:
        >>> layers = find_spectral_layers(model)  # doctest: +SKIP
    """
    return {name: m for name, m in model.named_modules() if isinstance(m, SpectralLinear)}


def apply_sst(model: nn.Module, rank: int | float, patterns: str | Iterable[str], seed: int,
              enhanced_grad: bool = True, forward_mode: ForwardMode = "dense", exclude: str | Iterable[str] = (),
              rule: str = "mixed") -> dict[str, SpectralLinear]:  # fmt: skip
    """Replace every matching ``nn.Linear`` by a :class:`SpectralLinear`, in place; idempotent.

    Layers already converted and matching ``patterns`` are returned too, so a second call (Lightning runs
    ``setup`` for fit, validate and test) is a no-op that returns the same layers. Warns when nothing matched.

    Args:
        model: the model to convert in place.
        rank: ``r`` per layer, an int (capped at ``k``) or a fraction of ``k`` (see :func:`resolve_rank`).
        patterns: module-name patterns (see :mod:`sstkit.functional.surgery`).
        seed: base seed; each layer's generator is seeded by :func:`layer_seed`.
        enhanced_grad: use the enhanced gradient for the active factors.
        forward_mode: ``"dense"`` or ``"factored"``.
        exclude: patterns removed from the selection.
        rule: sampling rule for the first active indices.

    Returns:
        ``{module name: SpectralLinear}`` in module order.

    Example:
        >>> layers = apply_sst(bert, rank=64, patterns=["re:attention.*(query|key|value|dense)$"], seed=0)  # doctest: +SKIP
    """
    if forward_mode not in ("dense", "factored"):
        raise ValueError(f"forward_mode must be 'dense' or 'factored', got {forward_mode!r}")
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    done = dict(select_modules(model, patterns, exclude, SpectralLinear))
    for name, linear in select_linears(model, patterns, exclude, warn_if_empty=False, method="sst"):
        r = resolve_rank(rank, min(linear.in_features, linear.out_features))
        layer = SpectralLinear.from_linear(linear, r, layer_seed(seed, name), enhanced_grad, forward_mode, rule)
        replace_module(model, name, layer)
        done[name] = layer
    warn_no_match(list(done), model, patterns, exclude, method="sst")
    return {name: m for name, m in model.named_modules() if name in done}


def active_parameters(layers: Mapping[str, SpectralLinear]) -> list[nn.Parameter]:
    """The active blocks ``U_active`` and ``Vh_active`` of all layers (whose optimizer state a resample voids)."""
    return [p for layer in layers.values() for p in (layer.U_active, layer.Vh_active)]


def renormalize_all(layers: Mapping[str, SpectralLinear]) -> None:
    """:meth:`SpectralLinear.renormalize_` on every layer; call after each ``optimizer.step()``."""
    for layer in layers.values():
        layer.renormalize_()


def resample_all(layers: Mapping[str, SpectralLinear], rule: str = "mixed",
                 generators: Mapping[str, torch.Generator] | None = None,
                 optimizer: torch.optim.Optimizer | None = None) -> dict[str, Tensor]:  # fmt: skip
    """Sample new active indices for every layer and swap them in; reset their Adam state if given ``optimizer``.

    Args:
        layers: ``{name: SpectralLinear}``.
        rule: one of :data:`RULES`.
        generators: per-layer generators; by default each layer's own (checkpointed) ``generator``.
        optimizer: if given, the Adam state of every active block is zeroed.

    Returns:
        The new indices by layer name.

    Example:
        >>> indices = resample_all(layers, "mixed", optimizer=opt)  # doctest: +SKIP
    """
    new = {}
    for name, layer in layers.items():
        generator = generators[name] if generators is not None else layer.generator
        new[name] = sample_indices(layer.s.detach(), layer.rank, rule, generator)
        layer.resample(new[name])
    if optimizer is not None:
        reset_adam_state(optimizer, active_parameters(layers))
    return new


def resvd_all(layers: Mapping[str, SpectralLinear], optimizer: torch.optim.Optimizer | None = None) -> None:
    """Re-decompose every layer's W; resets the Adam state of ``s`` and the active blocks if given ``optimizer``.

    ``s`` is re-sorted by the SVD, so its old moments no longer belong to the same singular values.
    """
    for layer in layers.values():
        layer.resvd_()
    if optimizer is not None:
        reset_adam_state(optimizer, [layer.s for layer in layers.values()] + active_parameters(layers))


def round_length(layer: SpectralLinear) -> int:
    """``T2 = ⌈k / r⌉``: iterations in a round, after which the layer is re-decomposed."""
    return math.ceil(layer.k / layer.rank)


def sst_step_end(layers: Mapping[str, SpectralLinear], steps_done: int, steps_per_iteration: int,
                 rule: str = "mixed", optimizer: torch.optim.Optimizer | None = None,
                 iterations_per_round: int | None = None, resvd: bool = True) -> dict[str, str]:  # fmt: skip
    """Everything SST does after an optimizer step: renormalise, and at an iteration's end resample (re-SVD first
    when the layer's round ends). State lives in the layers and ``steps_done``, so a resumed run continues exactly.

    Args:
        layers: ``{name: SpectralLinear}``.
        steps_done: optimizer steps completed so far, counting this one (1 after the first step).
        steps_per_iteration: ``T3``.
        rule: sampling rule.
        optimizer: if given, the Adam state of resampled blocks (and of ``s`` after a re-SVD) is reset.
        iterations_per_round: ``T2`` for every layer; ``None`` uses each layer's :func:`round_length`.
        resvd: re-decompose at a round's end; ``False`` is the "no re-SVD" ablation (rounds then only
            resample).

    Returns:
        ``{name: "resample" | "resvd"}`` for the layers that changed their active set this step.

    Example:
        >>> actions = sst_step_end(layers, trainer.global_step, 200, optimizer=opt)  # doctest: +SKIP
    """
    if steps_per_iteration < 1:
        raise ValueError(f"steps_per_iteration must be >= 1, got {steps_per_iteration}")
    if iterations_per_round is not None and iterations_per_round < 1:
        raise ValueError(f"iterations_per_round must be >= 1, got {iterations_per_round}")
    renormalize_all(layers)
    if steps_done <= 0 or steps_done % steps_per_iteration:
        return {}
    iteration = steps_done // steps_per_iteration
    actions = {}
    for name, layer in layers.items():
        reset = [layer.U_active, layer.Vh_active]
        if resvd and iteration % (iterations_per_round or round_length(layer)) == 0:
            layer.resvd_()
            reset.append(layer.s)
            actions[name] = "resvd"
        else:
            actions[name] = "resample"
        layer.resample(layer.sample(rule))
        if optimizer is not None:
            reset_adam_state(optimizer, reset)
    return actions


def merge_sst(model: nn.Module, prune_fraction: float = 0.0) -> list[str]:
    """Replace every :class:`SpectralLinear` by its merged ``nn.Linear``, in place; returns the names replaced.

    Afterwards the model holds no sstkit module and loads without sstkit.

    Example:
        >>> merge_sst(model, prune_fraction=0.5)  # doctest: +SKIP
        ['0', '2']
    """
    layers = find_spectral_layers(model)
    if "" in layers:
        raise ValueError("the model itself is a SpectralLinear; call its .merge() instead")
    for name, layer in layers.items():
        replace_module(model, name, layer.merge(prune_fraction))
    return list(layers)
