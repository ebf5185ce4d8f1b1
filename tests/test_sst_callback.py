"""The SparseSpectralTraining callback: surgery, post-step schedule, LR re-warm-up, memory, export, DDP agreement."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_BERT, tiny_config
from sstkit.callbacks import LoRA, SparseSpectralTraining
from support import run_sstkit

from sstkit.errors import SstkitError
from sstkit.functional.lr_rewarm import LrRewarm
from sstkit.functional.sst import find_spectral_layers, merge_sst
from sstkit.models import TextClassifier
from sstkit.nn import SpectralLinear

WRAPPED = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "0.output.dense"]


def tiny_model() -> TextClassifier:
    torch.manual_seed(0)
    return TextClassifier("minilm", pretrained=False, config_overrides=TINY_BERT, head_dropout=0.0).eval()


def batch(n: int = 4, length: int = 7) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"input_ids": torch.randint(0, 1000, (n, length), generator=g),
            "attention_mask": torch.ones(n, length, dtype=torch.long), "labels": torch.tensor([0, 1, 1, 0][:n])}


def logits(model: torch.nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(b["input_ids"], b["attention_mask"])


def train_steps(model: TextClassifier, cb: SparseSpectralTraining, steps: int) -> torch.optim.Optimizer:
    """A plain loop: AdamW over what trains, the callback's post-step work through its optimizer hooks."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    cb.rewarm.attach(opt)
    b = batch()
    for _ in range(steps):
        F.cross_entropy(model(b["input_ids"], b["attention_mask"]), b["labels"]).backward()
        opt.step()
        opt.zero_grad()
    cb.rewarm.detach()
    return opt


@pytest.mark.parametrize("mode", ["dense", "factored"])
def test_setup_wraps_projections_exactly_and_idempotently(mode: str) -> None:
    dense = tiny_model()
    model = copy.deepcopy(dense)
    cb = SparseSpectralTraining(rank=4, forward_mode=mode)
    cb.setup(None, model, "fit")
    names = sorted(cb.layers)
    assert len(names) == 6 and all(any(n.endswith(w) for n in names) for w in WRAPPED)
    assert not any("head" in n or "pooler" in n for n in names)
    torch.testing.assert_close(logits(model, batch()), logits(dense, batch()), atol=1e-5, rtol=1e-5)
    layers = dict(cb.layers)
    cb.setup(None, model, "validate")  # Lightning calls setup again for validate/test
    assert {n: id(m) for n, m in cb.layers.items()} == {n: id(m) for n, m in layers.items()}


def test_optimizer_state_only_for_s_and_active_blocks() -> None:
    model = tiny_model()
    cb = SparseSpectralTraining(rank=4, steps_per_iteration=100)
    cb.setup(None, model, "fit")
    opt = train_steps(model, cb, 1)
    for layer in cb.layers.values():
        k, r, out, inp = layer.k, layer.rank, layer.out_features, layer.in_features
        assert layer.U not in opt.state and layer.Vh not in opt.state  # buffers: never in the optimizer
        moments = sum(t.numel() for p in (layer.s, layer.U_active, layer.Vh_active)
                      for key, t in opt.state[p].items() if key in ("exp_avg", "exp_avg_sq"))
        assert moments == 2 * (k + r * (out + inp))


def test_schedule_resample_resvd_counters_and_state_reset() -> None:
    model = tiny_model()
    cb = SparseSpectralTraining(rank=4, steps_per_iteration=2, iterations_per_round=2, warmup_steps=3)
    cb.setup(None, model, "fit")
    name, layer = next(iter(cb.layers.items()))
    before = layer.active_indices.clone()
    opt = train_steps(model, cb, 3)
    assert (cb.steps, cb.iteration, cb.resample_count, cb.resvd_count) == (3, 1, 1, 0)
    assert not torch.equal(before, layer.active_indices)  # 32 choose 4: a repeat is (almost) impossible
    # Step 4 ends iteration 2 = round 1: renormalise, re-SVD (W unchanged), resample, zero the s state too.
    opt.param_groups[0]["lr"] = 0.0  # a zero step leaves W as it was, so the re-SVD alone is checked
    cb.rewarm.attach(opt)
    for lay in cb.layers.values():
        lay.renormalize_()
    weights = {n: lay.weight.clone() for n, lay in cb.layers.items()}
    b = batch()
    F.cross_entropy(model(b["input_ids"], b["attention_mask"]), b["labels"]).backward()
    opt.step()
    cb.rewarm.detach()
    assert (cb.steps, cb.resample_count, cb.resvd_count) == (4, 2, 1)
    for n, lay in cb.layers.items():
        torch.testing.assert_close(lay.weight, weights[n], atol=2e-5, rtol=1e-4)
        U, _, Vh = lay.factors()
        torch.testing.assert_close(U.T @ U, torch.eye(lay.k), atol=1e-4, rtol=0)
        assert torch.all(lay.s[:-1] >= lay.s[1:])  # re-sorted by the SVD
        for p in (lay.s, lay.U_active, lay.Vh_active):
            assert float(opt.state[p]["exp_avg"].abs().sum()) == 0.0
            assert float(opt.state[p]["exp_avg_sq"].abs().sum()) == 0.0
    assert cb.rewarm.factor() == pytest.approx(1 / 3)


def test_no_resvd_ablation_keeps_s_state() -> None:
    model = tiny_model()
    cb = SparseSpectralTraining(rank=4, steps_per_iteration=1, iterations_per_round=1, resvd=False)
    cb.setup(None, model, "fit")
    opt = train_steps(model, cb, 2)
    assert (cb.resample_count, cb.resvd_count) == (2, 0)
    layer = next(iter(cb.layers.values()))
    assert float(opt.state[layer.s]["exp_avg_sq"].abs().sum()) > 0
    assert float(opt.state[layer.U_active]["exp_avg_sq"].abs().sum()) == 0.0


def test_rewarm_factor_ramp_and_state() -> None:
    rewarm = LrRewarm(4)
    assert rewarm.factor() == 1.0  # no restart yet: the model's own warm-up covers the start
    rewarm.restart()
    factors = []
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.5)
    seen: list[float] = []
    rewarm.attach(opt)
    opt.register_step_pre_hook(lambda o, a, k: seen.append(o.param_groups[0]["lr"]))
    for _ in range(6):
        factors.append(rewarm.factor())
        p.grad = torch.ones(1)
        opt.step()
    assert factors == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert seen == [0.5 * f for f in factors] and opt.param_groups[0]["lr"] == 0.5
    other = LrRewarm(4)
    other.load_state_dict(rewarm.state_dict())
    assert (other.steps, other.last_restart) == (6, 0)


def test_rewarm_restores_lr_when_a_step_is_interrupted() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.5)
    rewarm = LrRewarm(4)
    rewarm.attach(opt)
    rewarm.restart()

    def closure() -> torch.Tensor:
        raise RuntimeError("loss exploded")

    with pytest.raises(RuntimeError):
        opt.step(closure)
    assert opt.param_groups[0]["lr"] == 0.125  # scaled while the step is in flight
    rewarm.detach()  # what the callback does on an exception
    assert opt.param_groups[0]["lr"] == 0.5 and rewarm.steps == 0


class LrProbe(L.Callback):
    """Records the LR each optimizer step really used vs the scheduled one, and the active-slot state after it."""

    def __init__(self) -> None:
        self.used: list[float] = []
        self.scheduled: list[float] = []
        self.active_state_after: list[float] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        opt = trainer.optimizers[0]
        layer = next(iter(find_spectral_layers(pl_module).values()))
        # Registered after the SST callback's hooks (callbacks start in list order), so these see its effects.
        opt.register_step_pre_hook(lambda o, a, k: self.used.append(o.param_groups[0]["lr"]))
        opt.register_step_post_hook(lambda o, a, k: self.active_state_after.append(
            float(o.state[layer.U_active]["exp_avg"].abs().sum())))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.scheduled.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_lightning_rewarm_jagged_lr_and_reset(data_dir: Path, tmp_path: Path) -> None:
    from sstkit.datamodules import SST2DataModule

    cb = SparseSpectralTraining(rank=4, steps_per_iteration=2, iterations_per_round=2, warmup_steps=2)
    probe = LrProbe()
    model = TextClassifier("minilm", pretrained=False, config_overrides=TINY_BERT, lr=1e-3, warmup_steps=1)
    data = SST2DataModule(data_dir=str(data_dir), batch_size=8, max_length=32)
    trainer = L.Trainer(accelerator="cpu", max_steps=6, callbacks=[cb, probe], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, data)
    ratios = [u / s for u, s in zip(probe.used, probe.scheduled, strict=True)]
    assert ratios == pytest.approx([1.0, 1.0, 0.5, 1.0, 0.5, 1.0])
    # The scheduler itself never saw the scaled LR: with warm-up 1 and linear decay over 6 steps it is exact.
    assert probe.scheduled == pytest.approx([1e-3 * (6 - i) / 5 if i else 1e-3 for i in range(6)])
    zero = [v == 0.0 for v in probe.active_state_after]
    assert zero == [False, True, False, True, False, True]
    assert (cb.steps, cb.resample_count, cb.resvd_count) == (6, 3, 1)
    assert {"method/sst/lr_factor", "method/sst/round", "method/sst/mean_active_s"} <= set(trainer.callback_metrics)


def test_merge_and_export_give_plain_equal_models() -> None:
    dense = tiny_model()
    model = copy.deepcopy(dense)
    cb = SparseSpectralTraining(rank=4, steps_per_iteration=1, export_dense=True)
    cb.setup(None, model, "fit")
    train_steps(model, cb, 2)
    expected = logits(model, batch())
    checkpoint: dict[str, Any] = {}
    cb.on_save_checkpoint(None, model, checkpoint)
    plain = copy.deepcopy(dense)
    plain.load_state_dict(checkpoint["dense_state_dict"])  # strict: the keys of the unwrapped model
    torch.testing.assert_close(logits(plain, batch()), expected, atol=1e-5, rtol=1e-4)
    assert sorted(merge_sst(model)) == sorted(cb.layers)
    assert not any(isinstance(m, SpectralLinear) for m in model.modules())
    torch.testing.assert_close(logits(model, batch()), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kwargs", [
    {"rank": 0}, {"rank": 1.5}, {"rank": "big"}, {"steps_per_iteration": 0}, {"warmup_steps": -1},
    {"iterations_per_round": "sometimes"}, {"iterations_per_round": 0}, {"sampling": "greedy"},
    {"forward_mode": "sparse"}, {"patterns": []},
])  # fmt: skip
def test_invalid_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(SstkitError, match="sst: "):
        SparseSpectralTraining(**kwargs)


def test_no_match_warns_and_lora_combination_refused() -> None:
    model = tiny_model()
    with pytest.warns(UserWarning, match="matched no nn.Linear"):
        SparseSpectralTraining(patterns=["*does_not_exist*"]).setup(None, model, "fit")
    model = tiny_model()
    LoRA(rank=2).setup(None, model, "fit")
    with pytest.raises(SstkitError, match="SparseSpectralTraining cannot be stacked on LoRA"):
        SparseSpectralTraining(rank=2).setup(None, model, "fit")


class IndexTrace(L.Callback):
    """Writes, per rank, every wrapped layer's active indices after each step and final parameter checksums."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir, self.indices = Path(out_dir), []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.indices.append({n: m.active_indices.tolist() for n, m in find_spectral_layers(pl_module).items()})

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sums = {n: float(p.detach().double().sum()) for n, p in pl_module.named_parameters()}
        sums.update({n: float(b.double().sum()) for n, b in pl_module.named_buffers() if n.endswith((".U", ".Vh"))})
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps({"indices": self.indices,
                                                                                  "sums": sums}))


@pytest.mark.ddp
def test_ddp_ranks_sample_same_indices_and_stay_in_sync(write_config, data_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(data_dir, max_steps=3)
    sst = {"class_path": "sstkit.callbacks.SparseSpectralTraining",
           "init_args": {"rank": 4, "steps_per_iteration": 1, "iterations_per_round": 2}}
    trace = {"class_path": "test_sst_callback.IndexTrace", "init_args": {"out_dir": str(tmp_path / "trace")}}
    config["trainer"]["callbacks"] = [sst, trace]
    result = run_sstkit("fit", "--config", str(write_config(config)), "--run_root", str(tmp_path), "--name", "ddp",
                        "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / "trace" / f"rank{r}.json").read_text()) for r in (0, 1))
    assert len(r0["indices"]) == 3 and r0["indices"] == r1["indices"]
    assert r0["indices"][0] != r0["indices"][1]  # resampled after every step
    for key, value in r0["sums"].items():  # gradients were all-reduced: identical parameters on both ranks
        assert value == pytest.approx(r1["sums"][key], rel=1e-6, abs=1e-6), key


@pytest.mark.parametrize("method", ["SparseSpectralTraining", "LoRA", "ReLoRA"])
def test_default_patterns_on_opt_family(method: str) -> None:
    import sstkit.callbacks

    from sstkit.models import CausalLM

    torch.manual_seed(0)
    dense = CausalLM(size="tiny", vocab_size=64).eval()
    model = copy.deepcopy(dense)
    cb = getattr(sstkit.callbacks, method)(rank=4)
    cb.setup(None, model, "fit")
    suffixes = sorted({name.rsplit(".", 1)[-1] for name in cb.layers})
    assert suffixes == ["fc1", "fc2", "k_proj", "out_proj", "q_proj", "v_proj"]
    assert not any("lm_head" in name for name in cb.layers)
    x = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(x), dense(x), atol=1e-5, rtol=1e-5)
