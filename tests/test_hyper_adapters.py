"""Hypernetwork adapters (FM3 / HyperFormer): identity at step 0, cost per task, task conditioning, transfer."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_BERT
from sstkit.callbacks import HyperAdapters
from test_sst_callback import batch

from sstkit.errors import SstkitError
from sstkit.functional.hyper_adapters import (
    BANK_ATTR,
    adapter_slots,
    apply_hyper_adapters,
    freeze_for_adapters,
    parameters_per_task,
    train_only_task,
)
from sstkit.models import MultitaskTextClassifier, TextClassifier
from sstkit.nn.hyper_adapter import HyperAdapterNetwork, PerTaskAdapters, set_condition

torch.set_num_threads(1)
TWO_LAYERS = {**TINY_BERT, "num_hidden_layers": 2}


def tiny_multitask(labels=(2, 4)) -> MultitaskTextClassifier:
    torch.manual_seed(0)
    return MultitaskTextClassifier("minilm", num_labels=list(labels), pretrained=False, config_overrides=TWO_LAYERS,
                                   head_dropout=0.0).eval()  # fmt: skip


def forward(model: MultitaskTextClassifier, tasks: list[int], n: int = 4) -> torch.Tensor:
    b = batch(n)
    with torch.no_grad():
        return model(b["input_ids"], b["attention_mask"], task_ids=torch.tensor(tasks))


def one_step(model: torch.nn.Module, tasks: list[int], lr: float = 1e-2) -> None:
    b = batch(len(tasks))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr)
    model.train()
    logits = model(b["input_ids"], b["attention_mask"], task_ids=torch.tensor(tasks))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 1, 0][: len(tasks)])).backward()
    optimizer.step()
    model.eval()


@pytest.mark.parametrize("kind", ["hyper", "per_task"])
def test_step_zero_equals_the_base_model(kind: str) -> None:
    model = tiny_multitask()
    before = forward(model, [0, 1, 1, 0])
    apply_hyper_adapters(model, num_tasks=2, kind=kind, bottleneck=4, task_dim=8, hyper_dim=8)
    assert len(adapter_slots(model)) == 2 * 2  # after attention and after the FFN, in both layers
    torch.testing.assert_close(forward(model, [0, 1, 1, 0]), before, atol=0, rtol=0)


def test_surgery_is_idempotent_and_freezes_the_backbone() -> None:
    model = tiny_multitask()
    bank = apply_hyper_adapters(model, num_tasks=2, bottleneck=4)
    assert apply_hyper_adapters(model, num_tasks=2, bottleneck=4) is bank
    assert len(adapter_slots(model)) == 4
    names = freeze_for_adapters(model, [r"re:(^|\.)heads\."])
    assert names and all(n.startswith((f"{BANK_ATTR}.", "heads.")) for n in names)
    assert any(n.startswith("heads.") for n in names)
    # The bank is stored once, not once per slot.
    assert sum(k.startswith(f"{BANK_ATTR}.up_generator") for k in model.state_dict()) == 2


def test_parameter_count_grows_only_by_the_task_embedding() -> None:
    small, large = (HyperAdapterNetwork(t, hidden_size=32, num_layers=2, bottleneck=4, task_dim=8) for t in (2, 7))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(large) - count(small) == 5 * 8
    assert parameters_per_task(large) == {"per_task": 8, "shared": count(small) - 2 * 8, "total": count(large)}
    plain_small, plain_large = (PerTaskAdapters(t, 32, 2, 4) for t in (2, 7))
    per_set = 2 * 2 * (2 * 32 * 4 + 4 + 32 + 2 * 32)  # layers × positions × (W_down, W_up, b_down, b_up, γ, β)
    assert count(plain_large) - count(plain_small) == 5 * per_set
    assert parameters_per_task(plain_large)["per_task"] == per_set


def test_different_tasks_get_different_weights_and_outputs() -> None:
    model = tiny_multitask(labels=(2, 2))
    bank = apply_hyper_adapters(model, num_tasks=2, bottleneck=4, task_dim=8, hyper_dim=8)
    freeze_for_adapters(model, [r"re:(^|\.)heads\."])
    w0, w1 = (bank.make(1, 0, torch.tensor([t]), torch.tensor([0])) for t in (0, 1))
    assert not torch.equal(w0[0], w1[0])  # W_down differs from the start (W_up is zero for every task)
    assert torch.equal(w0[2], torch.zeros_like(w0[2]))
    one_step(model, [0, 1, 0, 1])
    w0, w1 = (bank.make(1, 0, torch.tensor([t]), torch.tensor([0])) for t in (0, 1))
    assert w0[2].abs().sum() > 0 and not torch.allclose(w0[2], w1[2])
    # Same head weights for both tasks: only the generated adapters make the two outputs differ.
    model.heads[1].load_state_dict(model.heads[0].state_dict())
    assert not torch.allclose(forward(model, [0] * 4), forward(model, [1] * 4))


def test_per_example_tasks_equal_single_task_batches() -> None:
    model = tiny_multitask()
    apply_hyper_adapters(model, num_tasks=2, bottleneck=4, task_dim=8, hyper_dim=8)
    freeze_for_adapters(model, [r"re:(^|\.)heads\."])
    one_step(model, [0, 1, 0, 1])
    mixed = forward(model, [0, 1, 1, 0])
    torch.testing.assert_close(mixed[[0, 3]], forward(model, [0] * 4)[[0, 3]], atol=1e-5, rtol=0)
    torch.testing.assert_close(mixed[[1, 2]], forward(model, [1] * 4)[[1, 2]], atol=1e-5, rtol=0)


def test_language_embedding_conditions_the_weights() -> None:
    bank = HyperAdapterNetwork(2, 32, 2, 4, num_languages=3, task_dim=8)
    a, b = (bank.make(0, 1, torch.tensor([1]), torch.tensor([g])) for g in (0, 2))
    assert not torch.equal(a[0], b[0])
    bank.condition(torch.tensor([0, 1]), torch.tensor([2, 2]))
    (weights, index) = bank.weights(0, 0, torch.device("cpu"))
    assert weights[0].shape == (2, 4, 32) and index.tolist() == [0, 1]
    with pytest.raises(ValueError, match="language ids"):
        bank.condition(torch.tensor([0]), torch.tensor([3]))


def test_new_task_trains_only_its_embedding_and_head() -> None:
    model = tiny_multitask(labels=(2, 2))
    bank = apply_hyper_adapters(model, num_tasks=2, bottleneck=4, task_dim=8, hyper_dim=8)
    freeze_for_adapters(model, [r"re:(^|\.)heads\."])
    one_step(model, [0, 1, 0, 1])
    new = model.add_task("heldout", 2)
    assert bank.add_task() == new == 2
    freeze_for_adapters(model, [rf"re:^heads\.{new}\."])
    train_only_task(bank, new)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{BANK_ATTR}.task_embeddings", "heads.2.1.weight", "heads.2.1.bias"}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    one_step(model, [2, 2, 2, 2], lr=0.5)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {f"{BANK_ATTR}.task_embeddings", "heads.2.1.weight", "heads.2.1.bias"}
    z = bank.task_embeddings.detach()
    assert torch.equal(z[:2], before[f"{BANK_ATTR}.task_embeddings"][:2]) and not torch.equal(z[2], before[f"{BANK_ATTR}.task_embeddings"][2])


def test_callback_on_a_single_task_model_is_task_zero() -> None:
    torch.manual_seed(0)
    model = TextClassifier("minilm", pretrained=False, config_overrides=TINY_BERT, head_dropout=0.0).eval()
    b = batch()
    with torch.no_grad():
        before = model(b["input_ids"], b["attention_mask"])
    callback = HyperAdapters(bottleneck=4, task_dim=8, hyper_dim=8)
    callback.setup(None, model, "fit")
    callback.setup(None, model, "validate")  # setup again: nothing new
    assert callback.bank.num_tasks == 1 and len(adapter_slots(model)) == 2
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {BANK_ATTR, "head"}
    with torch.no_grad():
        torch.testing.assert_close(model(b["input_ids"], b["attention_mask"]), before, atol=0, rtol=0)
    assert set_condition(model, None) == 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "lora"}, "kind must be one of"),
    ({"bottleneck": 0}, "bottleneck must be an int >= 1"),
    ({"num_languages": -1}, "num_languages must be an int >= 0"),
    ({"kind": "per_task", "num_languages": 2}, "no language embedding"),
    ({"activation": "tanh"}, "activation must be"),
])  # fmt: skip
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(SstkitError, match=message):
        HyperAdapters(**kwargs)


def test_out_of_range_task_id_is_refused() -> None:
    model = tiny_multitask()
    apply_hyper_adapters(model, num_tasks=2, bottleneck=4)
    with pytest.raises(SstkitError, match=r"task ids must lie in \[0, 2\)"):
        forward(model, [0, 1, 2, 0])
