"""SST, LoRA, ReLoRA*, GaLore and AdamR refuse sharded training (FSDP / model parallel) with a clear message."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy
from sstkit.callbacks import GaLore, LoRA, ReLoRA, SparseSpectralTraining
from test_sst_callback import tiny_model

from sstkit.errors import SstkitError
from sstkit.optim import AdamR, GaLoreAdamW
from sstkit.stacking import methods_on

CALLBACKS = {
    "sst": lambda: SparseSpectralTraining(rank=2),
    "lora": lambda: LoRA(rank=2, alpha=4),
    "relora": lambda: ReLoRA(rank=2, alpha=4, merge_every=2),
    "galore": lambda: GaLore(rank=2),
}


@pytest.mark.parametrize("strategy", [FSDPStrategy, ModelParallelStrategy])
@pytest.mark.parametrize("method", sorted(CALLBACKS))
def test_callbacks_refuse_sharded_strategies_before_touching_the_model(method: str, strategy: type) -> None:
    model = tiny_model()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(SstkitError, match=rf"^{method}: trainer.strategy {strategy.__name__} shards .* use single-device or DDP"):
        CALLBACKS[method]().setup(SimpleNamespace(strategy=strategy()), model, "fit")
    assert methods_on(model) == ()
    assert model.state_dict().keys() == state.keys()


@pytest.mark.parametrize("method", sorted(CALLBACKS))
def test_callbacks_accept_ddp(method: str) -> None:
    model = tiny_model()
    CALLBACKS[method]().setup(SimpleNamespace(strategy=DDPStrategy()), model, "fit")
    assert methods_on(model) == (method,)


def _flattened(shape: tuple[int, ...]) -> torch.nn.Parameter:
    from torch.distributed.fsdp._common_utils import _set_fsdp_flattened

    param = torch.nn.Parameter(torch.randn(shape))
    _set_fsdp_flattened(param)  # what FSDP does to the tensors it shards
    return param


def test_optimizers_refuse_fsdp_flattened_parameters() -> None:
    with pytest.raises(SstkitError, match="AdamR: 1 parameters are sharded"):
        AdamR([_flattened((4,)), torch.nn.Parameter(torch.randn(2))], lr=1e-3)
    with pytest.raises(SstkitError, match="galore: 1 parameters are sharded"):
        GaLoreAdamW([{"params": [_flattened((4, 4))], "rank": 2}])
    AdamR([torch.nn.Parameter(torch.randn(2))], lr=1e-3)  # whole tensors: accepted
