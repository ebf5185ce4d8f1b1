"""Sparse Spectral Training as a Lightning callback (the method itself: :mod:`sstkit.functional.sst`).

Example (YAML)::

    trainer:
      callbacks:
        - class_path: sstkit.callbacks.SparseSpectralTraining
          init_args: {rank: 0.125, steps_per_iteration: 200, warmup_steps: 20}

Example (Python)::

    trainer = L.Trainer(callbacks=[SparseSpectralTraining(rank=64)])
    trainer.fit(model, data)
    merge_sst(model)  # plain nn.Linear layers again: save, load and serve without sstkit
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import torch

from sstkit.errors import SstkitError, require_int
from sstkit.functional.export import dense_state_dict
from sstkit.functional.sst import RULES, apply_sst, resolve_rank, sst_step_end
from sstkit.functional.surgery import method_patterns
from sstkit.nn.spectral import FORWARD_MODES, SpectralLinear
from sstkit.stacking import method_setup

from ._rewarm import RestartingMethod
from ._sharding import refuse_sharded


def check_rank(rank: Any, method: str) -> None:
    """Raises :class:`SstkitError` unless ``rank`` is an int >= 1 or a float fraction in (0, 1]."""
    try:
        resolve_rank(rank, 1 << 30)
    except (TypeError, ValueError) as err:
        raise SstkitError(f"{method}: rank must be an int >= 1 or a fraction in (0, 1], got {rank!r}") from err


class SparseSpectralTraining(RestartingMethod):
    """Trains the selected linears as ``U diag(s) Vh``: all of ``s`` and ``r`` sampled singular vector pairs a step.

    Surgery (each selected ``nn.Linear`` → :class:`~sstkit.nn.SpectralLinear`, exact at step 0) happens in
    ``setup``, before the optimizer exists, so the optimizer only ever holds ``s``, the active blocks and the
    unwrapped parameters; the frozen ``U``/``Vh`` are buffers. After every optimizer step the active vectors are
    renormalised and ``s`` is clamped at 0; every ``steps_per_iteration`` steps new indices are sampled, the
    active blocks' Adam state is zeroed and the learning rate re-warms over ``warmup_steps``; every
    ``iterations_per_round`` iterations W is re-decomposed by SVD and the Adam state of ``s`` is zeroed too.

    Args:
        rank: ``r`` per layer: an int (capped at the layer's ``k``) or a fraction of ``k`` (``0.125`` = k/8).
        steps_per_iteration: ``T3``, optimizer steps an index set is kept.
        warmup_steps: learning-rate re-warm-up after each resample (linear from ``1/warmup_steps``; 0 = none).
        iterations_per_round: ``T2``, iterations between re-SVDs; ``"auto"`` = ``⌈k/r⌉`` per layer.
        sampling: ``mixed`` (the paper's), ``multinomial`` (∝ s), ``uniform`` or ``top`` (largest ``s``).
        enhanced_grad: drop the ``s_i`` factor from the active vectors' gradients (the paper's default).
        patterns: module-name patterns to wrap (fnmatch globs, or ``re:`` regexes); default: the model family's
            ``method_patterns`` (e.g. Lorentz layers' inner linears), else the attention and MLP projections of
            BERT and OPT models.
        exclude: patterns removed from the selection.
        resvd: re-decompose at a round's end; ``False`` is the "no re-SVD" ablation.
        forward_mode: ``dense`` (materialise W once per step, fastest) or ``factored`` (two thin matmuls).
        seed: base seed of the per-layer index generators (identical on every DDP rank, by design).
        export_dense: also store merged dense weights in every checkpoint under ``"dense_state_dict"``.

    Example:
        >>> cb = SparseSpectralTraining(rank=4, steps_per_iteration=2, warmup_steps=1)
        >>> cb.iterations_per_round
        'auto'
    """

    def __init__(
        self,
        rank: int | float = 0.125,
        steps_per_iteration: int = 200,
        warmup_steps: int = 20,
        iterations_per_round: int | Literal["auto"] = "auto",
        sampling: Literal["mixed", "multinomial", "uniform", "top"] = "mixed",
        enhanced_grad: bool = True,
        patterns: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        resvd: bool = True,
        forward_mode: Literal["dense", "factored"] = "dense",
        seed: int = 0,
        export_dense: bool = False,
    ) -> None:
        super().__init__(warmup_steps, method="sst")
        check_rank(rank, "sst")
        require_int("sst", "steps_per_iteration", steps_per_iteration)
        if iterations_per_round != "auto" and (
            isinstance(iterations_per_round, bool)
            or not isinstance(iterations_per_round, int)
            or iterations_per_round < 1
        ):
            raise SstkitError(f"sst: iterations_per_round must be 'auto' or an int >= 1, got {iterations_per_round!r}")
        if sampling not in RULES:
            raise SstkitError(f"sst: sampling must be one of {RULES}, got {sampling!r}")
        if forward_mode not in FORWARD_MODES:
            raise SstkitError(f"sst: forward_mode must be one of {FORWARD_MODES}, got {forward_mode!r}")
        if patterns is not None:
            patterns = [patterns] if isinstance(patterns, str) else list(patterns)
            if not patterns:
                raise SstkitError("sst: patterns is empty; use ['*'] to wrap every nn.Linear")
        self.rank, self.steps_per_iteration, self.iterations_per_round = rank, steps_per_iteration, iterations_per_round
        self.sampling, self.enhanced_grad, self.forward_mode = sampling, enhanced_grad, forward_mode
        self.patterns, self.exclude = patterns, [exclude] if isinstance(exclude, str) else list(exclude)
        self.resvd, self.seed, self.export_dense = resvd, seed, export_dense
        self.layers: dict[str, SpectralLinear] = {}
        self.resample_count = 0
        self.resvd_count = 0

    @property
    def iteration(self) -> int:
        """Completed iterations (index sets used up)."""
        return self.steps // self.steps_per_iteration

    # --- surgery --------------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        refuse_sharded(trainer, "sst")  # SVD and resampling need whole weights (callbacks/_sharding.py)
        with method_setup(pl_module, "sst"):  # refuses methods SST cannot be stacked on (sstkit.stacking)
            self.layers = apply_sst(
                pl_module, self.rank, method_patterns(pl_module, self.patterns), self.seed,
                enhanced_grad=self.enhanced_grad, forward_mode=self.forward_mode, exclude=self.exclude,
                rule=self.sampling,
            )  # fmt: skip

    # --- after every optimizer step ---------------------------------------------------------------------------
    def after_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        t2 = None if self.iterations_per_round == "auto" else self.iterations_per_round
        actions = sst_step_end(self.layers, self.steps, self.steps_per_iteration, self.sampling, optimizer,
                               iterations_per_round=t2, resvd=self.resvd)  # fmt: skip
        if actions:
            self.resample_count += 1
            self.resvd_count += int("resvd" in actions.values())
            self.rewarm.restart()

    def metrics(self) -> dict[str, float | torch.Tensor]:
        if not self.layers:
            return {}
        with torch.no_grad():
            active_s = torch.stack([lay.s[lay.active_indices].mean() for lay in self.layers.values()]).mean()
        return {"iteration": self.iteration, "round": self.resvd_count, "resamples": self.resample_count,
                "mean_active_s": active_s}  # fmt: skip

    # --- checkpointing / export -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # Indices, U/Vh and each layer's generator state live in the model's state dict (buffers, extra state).
        return {**super().state_dict(), "resample_count": self.resample_count, "resvd_count": self.resvd_count}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.resample_count = int(state_dict["resample_count"])
        self.resvd_count = int(state_dict["resvd_count"])

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.export_dense:
            checkpoint["dense_state_dict"] = dense_state_dict(pl_module, {n: m.merge() for n, m in self.layers.items()})
