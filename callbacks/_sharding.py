"""Which Lightning strategies the weight-reparameterising methods support: they refuse sharded ones.

SST, LoRA, ReLoRA* and GaLore keep per-layer state that assumes each process holds whole weight matrices: SST
re-decomposes ``W`` by SVD and resamples singular-vector indices per layer, ReLoRA merges ``B A`` into ``W``,
GaLore takes the SVD of each weight's full gradient. Under FSDP (``FSDPStrategy``, ``ModelParallelStrategy``)
or DeepSpeed ZeRO each rank holds a shard of the flattened parameters, so those steps would act on fragments.
Single-device and DDP training (every rank holds the whole model) are supported and tested.

Example:
    >>> refuse_sharded(SimpleNamespace(strategy=None), "sst")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy

from sstkit.errors import SstkitError

SHARDED = (FSDPStrategy, ModelParallelStrategy, DeepSpeedStrategy)
SUPPORTED = "single-device or DDP (trainer.strategy: auto, ddp, ddp_spawn)"


def refuse_sharded(trainer: Any, method: str) -> None:
    """Raises :class:`SstkitError` when ``trainer`` shards parameters (FSDP, model parallel, DeepSpeed)."""
    strategy = getattr(trainer, "strategy", None)
    if isinstance(strategy, SHARDED):
        raise SstkitError(
            f"{method}: trainer.strategy {type(strategy).__name__} shards each weight across processes, but {method} "
            f"needs whole weight matrices on every process (SVD, merges, per-layer resampling); use {SUPPORTED}"
        )
