"""Multitask data (k-shot, task sampling), the multitask classifier's per-task metrics, and SetFit pairs."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import TINY_BERT
from sstkit.callbacks import HyperAdapters
from sstkit.datamodules import MultitaskTextDataModule
from sstkit.datamodules.multitask import TaskBatchSampler, k_shot_indices, task_probabilities
from support import run_cli

from sstkit.errors import SstkitError
from sstkit.functional.contrastive_pairs import cosine_pair_loss, in_batch_pair_loss, setfit_pairs
from sstkit.models import MultitaskTextClassifier

torch.set_num_threads(1)


def test_k_shot_is_exact_and_seeded() -> None:
    labels = torch.tensor([0, 1, 2] * 20)
    a, b, c = k_shot_indices(labels, 5, 0), k_shot_indices(labels, 5, 0), k_shot_indices(labels, 5, 1)
    assert a == b and a != c and a == sorted(set(a))
    assert torch.bincount(labels[a]).tolist() == [5, 5, 5]
    with pytest.raises(SstkitError, match="k_shot=21, but class 0 has only 20"):
        k_shot_indices(labels, 21, 0)


def test_task_probabilities() -> None:
    assert task_probabilities([100, 300], "size") == [0.25, 0.75]
    assert task_probabilities([100, 300], "uniform") == [0.5, 0.5]
    p = task_probabilities([100, 400], "temperature", 2.0)
    assert p == pytest.approx([1 / 3, 2 / 3])


def test_batches_are_single_task_seeded_and_follow_the_probabilities() -> None:
    offsets, probs = [0, 30, 130], [0.25, 0.75]
    sampler = TaskBatchSampler(offsets, 8, probs, seed=3)
    epoch0 = list(sampler)
    assert epoch0 == list(sampler) and len(epoch0) == len(sampler) == 17
    sampler.set_epoch(1)
    assert list(sampler) != epoch0
    tasks = []
    for batch in epoch0:
        task = {0 if i < 30 else 1 for i in batch}
        assert len(task) == 1 and len(batch) == 8 and len(set(batch)) == 8
        tasks.append(task.pop())
    many = [t for e in range(40) for t in (sampler.set_epoch(e), [int(b[0] >= 30) for b in sampler])[1]]
    assert sum(many) / len(many) == pytest.approx(0.75, abs=0.05)


def test_data_module_mixes_tasks_with_task_ids(data_dir: Path) -> None:
    dm = MultitaskTextDataModule(data_dir=str(data_dir), k_shot=3, batch_size=4, max_length=16, seed=1)
    dm.setup("fit")
    assert dm.num_labels == [2, 4]
    parts = dm.datasets["train"].parts
    assert [len(p) for p in parts] == [6, 12]
    assert torch.bincount(parts[1].labels).tolist() == [3, 3, 3, 3]
    for batch in dm.train_dataloader():
        tasks = set(batch["task_id"].tolist())
        assert len(tasks) == 1 and int(batch["labels"].max()) < dm.num_labels[tasks.pop()]
    val = next(iter(dm.val_dataloader()))
    assert val["task_id"].tolist() == [0, 0, 0, 0]
    again = MultitaskTextDataModule(data_dir=str(data_dir), k_shot=3, batch_size=4, max_length=16, seed=1)
    again.setup("fit")
    assert torch.equal(again.datasets["train"].parts[1].ids, parts[1].ids)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tasks": ["sst2", "imdb"]}, "data.tasks must be distinct names"),
    ({"sampling": "random"}, "data.sampling must be one of"),
    ({"temperature": 0}, "data.temperature must be > 0"),
    ({"k_shot": 0}, "data.k_shot must be >= 1"),
    ({"task_args": {"imdb": {}}}, "task_args names tasks not in data.tasks"),
])  # fmt: skip
def test_bad_data_arguments(data_dir: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(SstkitError, match=message):
        MultitaskTextDataModule(data_dir=str(data_dir), **kwargs)


def test_fit_logs_per_task_and_mean_accuracy(data_dir: Path, tmp_path: Path) -> None:
    L.seed_everything(0)
    dm = MultitaskTextDataModule(data_dir=str(data_dir), k_shot=4, batch_size=4, eval_batch_size=8, max_length=16,
                                 limit_eval_samples=12, task_args={"sst2": {"val_split": "test"}})  # fmt: skip
    model = MultitaskTextClassifier("minilm", num_labels=[2, 4], task_names=["sst2", "agnews"], pretrained=False,
                                    config_overrides=TINY_BERT, lr=1e-3)  # fmt: skip
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[HyperAdapters(bottleneck=4, task_dim=8, hyper_dim=8)], default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, dm)
    trainer.validate(model, dm, verbose=False)
    metrics = trainer.callback_metrics
    sst2, agnews = float(metrics["val/acc/sst2"]), float(metrics["val/acc/agnews"])
    assert float(metrics["val/acc/mean"]) == pytest.approx((sst2 + agnews) / 2)
    assert model.adapter_bank.num_tasks == 2
    assert not model.encoder.embeddings.word_embeddings.weight.requires_grad


def test_cli_links_the_tasks_label_counts(data_dir: Path, write_config, tmp_path: Path) -> None:
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 2, "num_sanity_val_steps": 0,
                    "enable_model_summary": False, "log_every_n_steps": 1, "val_check_interval": 2,
                    "callbacks": [{"class_path": "sstkit.callbacks.HyperAdapters",
                                   "init_args": {"bottleneck": 4, "task_dim": 8, "hyper_dim": 8,
                                                 "contrastive_steps": 1}}]},
        "model": {"class_path": "sstkit.models.MultitaskTextClassifier",
                  "init_args": {"backbone": "minilm", "pretrained": False, "config_overrides": TINY_BERT,
                                "task_names": ["sst2", "agnews"]}},
        "data": {"class_path": "sstkit.datamodules.MultitaskTextDataModule",
                 "init_args": {"data_dir": str(data_dir), "k_shot": 2, "batch_size": 4, "max_length": 16,
                               "limit_eval_samples": 4}},
    }  # fmt: skip
    cli = run_cli("fit", "--config", str(write_config(config)), "--run_root", str(tmp_path), "--name", "multitask")
    assert cli.model.task_labels == [2, 4] and cli.trainer.global_step == 2
    assert "val/acc/mean" in cli.trainer.callback_metrics
    assert "method/hyper_adapters/contrastive_loss" in cli.trainer.callback_metrics  # the stage ran from YAML


def test_setfit_pairs_and_cosine_loss() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2])
    pairs, targets = setfit_pairs(labels, pairs_per_example=3, seed=0)
    # Example 4 is alone in its class: it gets negatives only.
    assert len(pairs) == 3 * (2 * 5 - 1)
    same = (labels[pairs[:, 0]] == labels[pairs[:, 1]]).float()
    assert torch.equal(same, targets) and (pairs[:, 0] != pairs[:, 1]).all()
    assert torch.equal(setfit_pairs(labels, 3, seed=0)[0], pairs)
    u = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert float(cosine_pair_loss(u, v, torch.tensor([1.0, 1.0]))) == pytest.approx(0.5)


def test_in_batch_pairs_skip_unlabelled_rows() -> None:
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 4.0]])
    labels = torch.tensor([0, -100, 1, 0])
    loss = in_batch_pair_loss(emb, labels, pairs_per_example=2, seed=0)
    pairs, targets = setfit_pairs(torch.tensor([0, 1, 0]), 2, seed=0)
    rows = torch.tensor([0, 2, 3])[pairs]
    torch.testing.assert_close(loss, cosine_pair_loss(emb[rows[:, 0]], emb[rows[:, 1]], targets))
    assert in_batch_pair_loss(emb, torch.tensor([0, -100, -100, -100])) is None


class HeadWatch(L.Callback):
    """Records the heads' and the hypernetwork's weights after every training step."""

    def __init__(self) -> None:
        self.heads: list[torch.Tensor] = []
        self.up: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.heads.append(torch.cat([p.detach().flatten().clone() for p in pl_module.heads.parameters()]))
        self.up.append(pl_module.adapter_bank.up_generator.weight.detach().clone())


def test_contrastive_stage_moves_only_the_adapters_then_the_heads_train(data_dir: Path, tmp_path: Path) -> None:
    L.seed_everything(0)
    dm = MultitaskTextDataModule(data_dir=str(data_dir), k_shot=4, batch_size=4, max_length=16, limit_eval_samples=4)
    model = MultitaskTextClassifier("minilm", num_labels=[2, 4], pretrained=False, config_overrides=TINY_BERT, lr=1e-2,
                                    warmup_steps=0, scheduler="constant")  # fmt: skip
    heads0 = torch.cat([p.detach().flatten().clone() for p in model.heads.parameters()])
    watch = HeadWatch()
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, default_root_dir=tmp_path,
                        callbacks=[HyperAdapters(bottleneck=4, task_dim=8, hyper_dim=8, contrastive_steps=2), watch])  # fmt: skip
    trainer.fit(model, dm)
    assert torch.equal(watch.heads[0], heads0) and torch.equal(watch.heads[1], heads0)  # stage 1: heads wait
    assert watch.up[0].abs().sum() > 0 and not torch.equal(watch.up[0], watch.up[1])  # the adapters move
    assert not torch.equal(watch.heads[2], heads0)  # stage 2: the heads train
    with pytest.raises(SstkitError, match="contrastive_steps must be an int >= 0"):
        HyperAdapters(contrastive_steps=-1)
