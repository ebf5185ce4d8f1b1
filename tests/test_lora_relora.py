"""LoRA and ReLoRA* callbacks: peft surgery, trainable sets, exact start, merges, restarts and export."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from sstkit.callbacks import LoRA, ReLoRA, SparseSpectralTraining
from test_sst_callback import batch, logits, tiny_model

from sstkit.errors import SstkitError
from sstkit.functional.lora import find_lora_layers, merge_lora


def loss(model: torch.nn.Module) -> torch.Tensor:
    b = batch()
    return F.cross_entropy(model(b["input_ids"], b["attention_mask"]), b["labels"])


def test_lora_starts_exact_with_b_zero_and_freezes_base_weights() -> None:
    dense = tiny_model()
    model = copy.deepcopy(dense)
    cb = LoRA(rank=4, alpha=8)
    cb.setup(None, model, "fit")
    assert len(cb.layers) == 6 and not any("head" in n for n in cb.layers)
    for layer in cb.layers.values():
        assert float(layer.lora_B["default"].weight.detach().abs().sum()) == 0.0
        assert float(layer.lora_A["default"].weight.detach().abs().sum()) > 0.0
        assert layer.scaling["default"] == 2.0
    torch.testing.assert_close(logits(model, batch()), logits(dense, batch()))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.endswith("base_layer.weight") for n in trainable)
    assert sum(n.endswith("base_layer.bias") for n in trainable) == 6  # train_bias=True
    assert "encoder.embeddings.word_embeddings.weight" in trainable and "head.1.weight" in trainable
    keys = set(model.state_dict())
    cb.setup(None, model, "validate")  # idempotent: nothing wrapped twice
    assert set(model.state_dict()) == keys


def test_lora_fine_tuning_trains_only_adapters_and_head() -> None:
    model = tiny_model()
    LoRA(rank=2, freeze_other=True, train_bias=False).setup(None, model, "fit")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in dict(model.named_parameters()) if ".lora_" in n} | {"head.1.weight", "head.1.bias"}


def test_lora_merge_and_export_equal_outputs() -> None:
    dense = tiny_model()
    model = copy.deepcopy(dense)
    cb = LoRA(rank=4, alpha=8, export_dense=True)
    cb.setup(None, model, "fit")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        loss(model).backward()
        opt.step()
        opt.zero_grad()
    assert float(next(iter(cb.layers.values())).lora_B["default"].weight.detach().abs().sum()) > 0
    expected = logits(model, batch())
    checkpoint: dict[str, Any] = {}
    cb.on_save_checkpoint(None, model, checkpoint)
    plain = copy.deepcopy(dense)
    plain.load_state_dict(checkpoint["dense_state_dict"])
    torch.testing.assert_close(logits(plain, batch()), expected, atol=1e-5, rtol=1e-4)
    assert sorted(merge_lora(model)) == sorted(cb.layers) and not find_lora_layers(model)
    torch.testing.assert_close(logits(model, batch()), expected, atol=1e-5, rtol=1e-4)


def test_relora_restart_preserves_function_and_resets_adapters() -> None:
    dense = tiny_model()
    model = copy.deepcopy(dense)
    cb = ReLoRA(rank=4, alpha=8, merge_every=2, restart_warmup_steps=4)
    cb.setup(None, model, "fit")
    torch.testing.assert_close(logits(model, batch()), logits(dense, batch()))  # B = 0: exact at step 0
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    before_restart: list[torch.Tensor] = []
    # Registered before the callback's hooks, so it sees the model after the step but before the restart.
    opt.register_step_post_hook(lambda o, a, k: before_restart.append(logits(model, batch())))
    cb.rewarm.attach(opt)
    name, layer = next(iter(cb.layers.items()))
    A0 = layer.lora_A["default"].weight.detach().clone()
    W0 = layer.get_base_layer().weight.detach().clone()
    for step in (1, 2):
        loss(model).backward()
        opt.step()
        opt.zero_grad()
        if step == 1:
            assert cb.restarts == 0 and float(layer.lora_B["default"].weight.detach().abs().sum()) > 0
    assert (cb.steps, cb.restarts) == (2, 1)
    torch.testing.assert_close(logits(model, batch()), before_restart[-1], atol=1e-5, rtol=1e-4)
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    assert float(B.detach().abs().sum()) == 0.0 and not torch.equal(A, A0)
    assert float(A.detach().abs().max()) <= 1 / A.shape[1] ** 0.5  # Kaiming-uniform, a=sqrt(5): U(±1/sqrt(fan_in))
    assert not torch.equal(layer.get_base_layer().weight, W0)  # the update went into W0
    for lay in cb.layers.values():
        for p in (lay.lora_A["default"].weight, lay.lora_B["default"].weight):
            assert float(opt.state[p]["exp_avg"].abs().sum()) == 0.0 and int(opt.state[p]["step"]) == 0
    assert cb.rewarm.factor() == pytest.approx(0.25)
    cb.rewarm.detach()


def test_relora_reinit_is_seeded_and_checkpointed() -> None:
    def restarted(cb: ReLoRA, global_seed: int) -> torch.Tensor:
        model = tiny_model()
        torch.manual_seed(global_seed)  # changes the first A (peft draws it globally), not the restarted one
        cb.setup(None, model, "fit")
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        cb.rewarm.attach(opt)
        loss(model).backward()
        opt.step()
        cb.rewarm.detach()
        return next(iter(cb.layers.values())).lora_A["default"].weight.detach().clone()

    a, b = ReLoRA(rank=2, merge_every=1, seed=3), ReLoRA(rank=2, merge_every=1, seed=3)
    first = restarted(a, 123)
    torch.testing.assert_close(restarted(b, 456), first, atol=0, rtol=0)
    state = a.state_dict()
    c = ReLoRA(rank=2, merge_every=1, seed=99)
    c.load_state_dict(state)
    assert (c.steps, c.restarts) == (1, 1) and torch.equal(c.generator.get_state(), a.generator.get_state())


@pytest.mark.parametrize(("cls", "kwargs"), [
    (LoRA, {"rank": 0}), (LoRA, {"rank": 2.5}), (LoRA, {"alpha": 0}), (LoRA, {"dropout": 1.0}),
    (LoRA, {"patterns": []}), (ReLoRA, {"merge_every": 0}), (ReLoRA, {"restart_warmup_steps": -2}),
    (ReLoRA, {"rank": -1}),
])  # fmt: skip
def test_invalid_arguments_raise(cls: type, kwargs: dict) -> None:
    with pytest.raises(SstkitError, match=f"{cls.__name__.lower()}: "):
        cls(**kwargs)


def test_no_match_warns_and_sst_combination_refused() -> None:
    model = tiny_model()
    with pytest.warns(UserWarning, match="matched no nn.Linear"):
        LoRA(patterns=["re:nothing_here$"]).setup(None, model, "fit")
    model = tiny_model()
    SparseSpectralTraining(rank=2).setup(None, model, "fit")
    with pytest.raises(SstkitError, match="ReLoRA cannot be stacked on SparseSpectralTraining"):
        ReLoRA(rank=2).setup(None, model, "fit")
