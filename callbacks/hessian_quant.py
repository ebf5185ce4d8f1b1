"""Q-BERT as a callback: Hessian sensitivities → mixed-precision bits → quantisation-aware fine-tuning.

At fit start (model in eval mode, fp32, quantisers off) the callback estimates every encoder block's top Hessian
eigenvalue on a few training batches and its sensitivity Ω (:mod:`sstkit.functional.hessian`), or loads Ω from a
file or list; assigns bits by Ω rank (:mod:`sstkit.functional.bit_assignment`); and sets the bits of the group-wise
fake quantisers it swapped into the model in ``setup`` (:mod:`sstkit.functional.quantize`). The rest of the fit is
quantisation-aware training with a straight-through estimator. Ω, the eigenvalues and the bits live in the
callback's ``state_dict``, so resuming (or ``sstkit test --ckpt_path``) quantises exactly as before.

Example (YAML)::

    trainer:
      callbacks:
        - class_path: sstkit.callbacks.HessianQuantization
          init_args: {bits: "2/3", num_groups: 128, activation_bits: 8, embedding_bits: 8}
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device

from sstkit.errors import SstkitError
from sstkit.functional.bit_assignment import (
    ORDERS,
    bits_from_budget,
    bits_from_map,
    bits_from_pattern,
    parse_pattern,
)
from sstkit.functional.hessian import block_sensitivities, discover_blocks
from sstkit.functional.quantize import (
    DEFAULT_EXCLUDE,
    block_weight_counts,
    model_size_mb,
    set_quant_bits,
    swap_quant_modules,
)
from sstkit.nn.quant import check_bits
from sstkit.stacking import method_setup

METHOD = "qbert"


def load_omega(source: str | list[float] | dict[str, float], blocks: list[str]) -> dict[str, float]:
    """Ω per block from a JSON file (``{"omega": {...}}``, a name→value map or a list), a list or a map."""
    value: Any = source
    if isinstance(source, str):
        path = Path(source)
        if not path.is_file():
            raise SstkitError(f"omega: file {path} not found (expected JSON written by HessianQuantization or "
                              f"`sstkit quantize`)")
        value = json.loads(path.read_text())
        value = value.get("omega", value) if isinstance(value, dict) else value
    if isinstance(value, list | tuple):
        if len(value) != len(blocks):
            raise SstkitError(f"omega: {len(value)} values for {len(blocks)} blocks {blocks}")
        return {b: float(v) for b, v in zip(blocks, value)}
    if isinstance(value, dict):
        missing = [b for b in blocks if b not in value]
        if missing:
            raise SstkitError(f"omega: no value for blocks {missing} (given: {list(value)})")
        return {b: float(value[b]) for b in blocks}
    raise SstkitError(f"omega: expected a file path, a list or a map, got {type(source).__name__}")


class HessianQuantization(L.Callback):
    """Hessian-aware mixed-precision quantisation with QAT (Q-BERT).

    Args:
        bits: a pattern of widths, ``"2/3"`` (most sensitive half 3 bits, rest 2), ``"8"`` (uniform), …
        allowed_bits, budget_mb: instead of ``bits``, widths raised by Ω rank within a size budget (MB of block
            weights).
        layer_bits: instead of both, a manual map ``{block name or index: bits}``.
        order: ``omega`` (paper), ``reverse`` or ``random`` ranking (the ablation).
        num_groups: groups of output rows per matrix (per head first for attention projections).
        embedding_bits, other_bits: bits of embeddings and of linears outside blocks (null: full precision).
        activation_bits: input activations of quantised linears (null: not quantised).
        blocks: block name prefixes (default: every ``*.layer.<k>`` / ``*.layers.<k>``).
        exclude: modules kept full precision (default: the task head).
        omega: Ω from a JSON file, a list or a map, instead of computing it.
        hessian_batches: training batches per data subset; num_subsets: estimates per block.
        max_iter, tol: Lanczos limits (steps, relative residual; see :func:`sstkit.functional.hessian.top_eigenvalue`).
        seed: start vectors and the ``random`` order.
        omega_file: where to write the computed Ω (JSON, rank 0).
        init_weights: a checkpoint of the fine-tuned model whose weights are loaded in ``setup`` before
            quantising (a resumed run then restores its own weights over them).
    """

    def __init__(self, bits: str | int = "2/3", allowed_bits: list[int] | None = None, budget_mb: float | None = None,
                 layer_bits: dict[str, int] | None = None, order: str = "omega", num_groups: int = 128,
                 embedding_bits: int | None = 8, other_bits: int | None = 8, activation_bits: int | None = 8,
                 blocks: list[str] | None = None, exclude: list[str] | None = None,
                 omega: str | list[float] | dict[str, float] | None = None, hessian_batches: int = 2,
                 num_subsets: int = 3, max_iter: int = 20, tol: float = 1e-3, seed: int = 0,
                 omega_file: str | None = None, init_weights: str | None = None) -> None:
        self.widths = parse_pattern(bits)
        if order not in ORDERS:
            raise SstkitError(f"HessianQuantization.order must be one of {ORDERS}, got {order!r}")
        if (budget_mb is None) != (allowed_bits is None):
            raise SstkitError("HessianQuantization: give budget_mb and allowed_bits together (or neither)")
        if budget_mb is not None and budget_mb <= 0:
            raise SstkitError(f"HessianQuantization.budget_mb must be > 0, got {budget_mb}")
        for name, value in (("num_groups", num_groups), ("hessian_batches", hessian_batches),
                            ("num_subsets", num_subsets), ("max_iter", max_iter)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SstkitError(f"HessianQuantization.{name} must be an integer >= 1, got {value!r}")
        if tol <= 0:
            raise SstkitError(f"HessianQuantization.tol must be > 0, got {tol}")
        for name, value in (("embedding_bits", embedding_bits), ("other_bits", other_bits),
                            ("activation_bits", activation_bits)):
            check_bits(value, f"HessianQuantization.{name}")
        self.bits, self.allowed_bits, self.budget_mb, self.layer_bits = bits, allowed_bits, budget_mb, layer_bits
        self.order, self.num_groups, self.seed = order, num_groups, seed
        self.embedding_bits, self.other_bits, self.activation_bits = embedding_bits, other_bits, activation_bits
        self.blocks, self.exclude = blocks, list(exclude) if exclude is not None else list(DEFAULT_EXCLUDE)
        self.omega_source, self.omega_file, self.init_weights = omega, omega_file, init_weights
        self.hessian_batches, self.num_subsets, self.max_iter, self.tol = hessian_batches, num_subsets, max_iter, tol
        self.state: dict[str, Any] = {}
        self._model: L.LightningModule | None = None
        self._block_names: list[str] = []

    # --- what needs the Hessian -----------------------------------------------------------------------------
    @property
    def needs_omega(self) -> bool:
        """Whether the bit assignment depends on Ω (uniform, manual and random orders do not)."""
        if self.layer_bits is not None or self.order == "random":
            return False
        return self.budget_mb is not None or len(self.widths) > 1

    def _assign(self, omega: dict[str, float]) -> dict[str, int]:
        if self.layer_bits is not None:
            return bits_from_map(self._block_names, self.layer_bits)
        if self.budget_mb is not None:
            sizes = block_weight_counts(self._model, self._block_names)
            return bits_from_budget(omega, sizes, self.allowed_bits or [], self.budget_mb, self.order, self.seed)
        return bits_from_pattern(omega, self.bits, self.order, self.seed)

    def _apply(self) -> None:
        assert self._model is not None
        set_quant_bits(self._model, self.state["bits"], self.other_bits, self.embedding_bits, self.activation_bits,
                       self.num_groups)
        self.state.update(model_size_mb(self._model))

    def _resolve(self, omega: dict[str, float]) -> None:
        self.state.setdefault("omega", omega)
        self.state["bits"] = self._assign(self.state["omega"])
        self._apply()

    # --- Lightning hooks ------------------------------------------------------------------------------------
    def attach(self, pl_module: torch.nn.Module) -> None:
        """Swaps in the fake quantisers (idempotent) and sets bits where they are already known."""
        self._model = pl_module
        if not self._block_names:
            self._block_names = list(discover_blocks(pl_module, self.blocks))
        if not self._block_names:
            warnings.warn("HessianQuantization: found no blocks (no parameter named *.layer.<k>.* or *.layers.<k>.*); "
                          "set `blocks` to the name prefixes of the model's layers", UserWarning, stacklevel=2)
        wrapped = swap_quant_modules(pl_module, self.num_groups, self.exclude)
        if not wrapped:
            warnings.warn(f"HessianQuantization: no nn.Linear or nn.Embedding to quantise in "
                          f"{type(pl_module).__name__} (exclude={self.exclude})", UserWarning, stacklevel=2)
        if "bits" in self.state:
            self._apply()
        elif not self.needs_omega:
            self._resolve({b: 0.0 for b in self._block_names})
        elif self.omega_source is not None:
            self._resolve(load_omega(self.omega_source, self._block_names))

    @property
    def resolved(self) -> bool:
        """Whether the bits are known (computed, loaded or not needing Ω)."""
        return "bits" in self.state

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        with method_setup(pl_module, METHOD):  # refuses methods Q-BERT cannot be stacked on (sstkit.stacking)
            if self.init_weights and stage == "fit" and not self._block_names:
                self._load_weights(pl_module)
            self.attach(pl_module)

    def _load_weights(self, pl_module: torch.nn.Module) -> None:
        path = Path(self.init_weights or "")
        if not path.is_file():
            raise SstkitError(f"HessianQuantization.init_weights: checkpoint {path} not found (fine-tune first, "
                              f"e.g. `sstkit fit --config configs/bert/sst2/finetune.yaml`)")
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        state = checkpoint.get("state_dict", checkpoint)
        missing, unexpected = pl_module.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise SstkitError(f"HessianQuantization.init_weights: {path} does not fit {type(pl_module).__name__} "
                              f"(missing {list(missing)[:4]}, unexpected {list(unexpected)[:4]})")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.resolved:  # not loaded from a checkpoint, a file or a uniform pattern
            loader = (trainer.datamodule.train_dataloader() if trainer.datamodule is not None
                      else pl_module.train_dataloader())
            omega = self.compute_omega(pl_module, loader, trainer.global_rank, trainer.world_size)
            self.resolve(omega)

    def resolve(self, omega: dict[str, float]) -> None:
        """Assigns bits from ``omega`` and sets them on the quantisers."""
        self._resolve(omega)

    def compute_omega(self, pl_module: torch.nn.Module, loader: Iterable[Any], rank: int = 0,
                      world: int = 1) -> dict[str, float]:
        """Ω per block on the first batches of ``loader`` (each DDP rank takes every ``world``-th batch)."""
        wanted = self.num_subsets * self.hessian_batches
        device = next(pl_module.parameters()).device
        batches: list[Any] = []
        for i, batch in enumerate(loader):
            if len(batches) == wanted:
                break
            if i % world == rank:
                batches.append(move_data_to_device(batch, device))
        if len(batches) < wanted:
            raise SstkitError(f"HessianQuantization: needs {wanted * world} training batches "
                              f"(num_subsets × hessian_batches × devices), the loader has fewer")
        if any(p.dtype != torch.float32 for p in pl_module.parameters()):
            warnings.warn("HessianQuantization: the model is not fp32; eigenvalues are less reliable",
                          UserWarning, stacklevel=2)
        step = getattr(pl_module, "step", None)
        loss_fn = (lambda m, b: m.step(b, "train").loss) if callable(step) else (lambda m, b: m.training_step(b, 0))
        result = block_sensitivities(pl_module, loss_fn, batches, self._block_names, self.num_subsets,
                                     self.max_iter, self.tol, self.seed)
        self.state.update(eigenvalues=result.eigenvalues, hvps=result.hvps, hessian_s=result.seconds,
                          iterations=result.iterations)
        if self.omega_file and rank == 0:
            Path(self.omega_file).parent.mkdir(parents=True, exist_ok=True)
            Path(self.omega_file).write_text(json.dumps({"omega": result.omega, **self.state}, indent=2))
        return result.omega

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        values = {f"method/{METHOD}/{k}": float(self.state[k])
                  for k in ("size_mb", "size_mb_no_emb", "hvps", "hessian_s") if k in self.state}
        for i, block in enumerate(self._block_names):
            values[f"method/{METHOD}/bits/{i}"] = float(self.state["bits"][block])
            if self.needs_omega:
                values[f"method/{METHOD}/omega/{i}"] = float(self.state["omega"][block])
        pl_module.log_dict(values, on_step=True, on_epoch=False)

    # --- checkpointing --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.state))  # a copy, and plain JSON types only

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.state = dict(state_dict)
        if self._model is not None and "bits" in self.state:
            self._apply()
