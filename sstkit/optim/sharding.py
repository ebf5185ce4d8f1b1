"""Optimizer wrappers refuse sharded parameters (FSDP, model parallel): their steps need whole tensors.

AdamR's scale ``s_t`` is a mean over *all* parameters' second moments and its anchor ``θ_pre`` is per tensor;
GaLore takes the SVD of each weight's whole gradient. Under FSDP each process holds a flattened shard, so both
would compute something else than on one process. Single-device and DDP are supported (whole tensors everywhere).

Example:
    >>> from torch import nn
    >>> refuse_sharded_params("adamr", nn.Linear(2, 2).parameters())  # plain parameters: fine
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor

from sstkit.errors import SstkitError

_FSDP_FLATTENED = "_fsdp_flattened"  # the marker torch.distributed.fsdp sets on the tensors it flattens


def is_sharded(param: Tensor) -> bool:
    """Whether ``param`` is an FSDP-flattened tensor or a DTensor (FSDP2 / ModelParallelStrategy)."""
    if getattr(param, _FSDP_FLATTENED, False):
        return True
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed support
        return False
    return isinstance(param, DTensor)


def refuse_sharded_params(method: str, params: Iterable[Tensor]) -> None:
    """Raises :class:`SstkitError` when any parameter is sharded across processes."""
    count = sum(is_sharded(p) for p in params)
    if count:
        raise SstkitError(f"{method}: {count} parameters are sharded across processes (FSDP / model parallel), but "
                          f"{method} needs whole tensors on every process; use a single device or DDP "
                          "(trainer.strategy: auto, ddp, ddp_spawn)")

