"""Token classification in the multitask data and model: the name-tagging rule, alignment, k-shot, per-task metrics."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import TINY_BERT
from sstkit.callbacks import HyperAdapters
from sstkit.datamodules import AGNewsNamesDataModule, MultitaskTextDataModule
from sstkit.datamodules.token_tagging import IGNORE, TagCollate, k_shot_tagged_indices, name_tags
from support import run_cli

from sstkit.errors import SstkitError
from sstkit.functional.hyper_adapters import apply_hyper_adapters
from sstkit.loaders import load_tokenizer
from sstkit.models import MultitaskTextClassifier
from sstkit.models.multitask_classifier import _f1_without_outside, _tag_counts
from sstkit.nn.hyper_adapter import set_condition

torch.set_num_threads(1)


def test_name_rule_tags_capitalised_runs_and_numbers_but_not_sentence_starts() -> None:
    words, tags = name_tags("The US Federal Trade Commission filed its first case, says Sanford Wallace. Toshiba "
                            "sold 80 drives on Tuesday#39;s market.")  # fmt: skip
    tagged = {w: t for w, t in zip(words, tags)}
    assert tags[:5] == [0, 1, 2, 2, 2]  # "The" starts the text; then one four-word name
    assert (tagged["Sanford"], tagged["Wallace"]) == (1, 2)
    assert tagged["Toshiba"] == 0 and tagged["80"] == 3 and tagged["filed"] == 0
    assert "Tuesday's" in words and tagged["Tuesday's"] == 1  # the HTML entity "#39;" is decoded first


def test_only_the_first_sub_word_carries_the_tag(data_dir: Path) -> None:
    dm = AGNewsNamesDataModule(data_dir=str(data_dir), max_length=48)
    dm.setup("fit")
    train, tokenizer = dm.datasets["train"], load_tokenizer("minilm")
    assert dm.num_labels == 4 and (train.labels == IGNORE).all() and len(train.tags) == len(train.ids)
    for i in range(5):
        ids, tags = train[i]["input_ids"], train[i]["tags"]
        assert tags[0] == IGNORE and tags[-1] == IGNORE  # [CLS], [SEP]
        pieces = tokenizer.convert_ids_to_tokens(ids.tolist())
        assert all(t == IGNORE for p, t in zip(pieces, tags.tolist()) if p.startswith("##"))
    again = AGNewsNamesDataModule(data_dir=str(data_dir), max_length=48)  # from the cache
    again.setup("fit")
    assert torch.equal(again.datasets["train"].tags, train.tags)
    batch = TagCollate(0)([train[0], train[1]])
    longest = batch["input_ids"].shape[1]
    assert batch["token_labels"].shape == (2, longest)
    short = int(batch["attention_mask"].sum(1).argmin())
    assert (batch["token_labels"][short][batch["attention_mask"][short] == 0] == IGNORE).all()


def test_tagged_k_shot_is_greedy_seeded_and_covers_every_counted_tag(data_dir: Path) -> None:
    dm = AGNewsNamesDataModule(data_dir=str(data_dir), max_length=48)
    dm.setup("fit")
    data = dm.datasets["train"]
    a, b, c = (k_shot_tagged_indices(data, 3, s, [1, 3]) for s in (0, 0, 1))
    assert a == b and a != c and a == sorted(set(a))
    sub = data.subset(a)
    counts = torch.bincount(sub.tags.clamp(min=0), minlength=4)
    assert counts[1] >= 3 and counts[3] >= 3
    assert len(a) < len(data)
    with pytest.raises(SstkitError, match="data.k_shot=100000, but the training texts hold only"):
        k_shot_tagged_indices(data, 100_000, 0, [1, 3])


def test_multitask_data_mixes_a_token_task(data_dir: Path) -> None:
    dm = MultitaskTextDataModule(tasks=["sst2", "agnews_names"], data_dir=str(data_dir), k_shot=2, batch_size=4,
                                 max_length=24, limit_eval_samples=6, seed=0)  # fmt: skip
    dm.setup("fit")
    assert dm.num_labels == [2, 4] and dm.task_types == ["sequence", "token"]
    for batch in dm.train_dataloader():
        task = int(batch["task_id"][0])
        assert ("token_labels" in batch) == (task == 1)
        if task == 1:
            assert (batch["labels"] == IGNORE).all() and (batch["token_labels"] != IGNORE).any()
    mixed = [b for b in dm.val_dataloader() if len(set(b["task_id"].tolist())) == 2]
    assert mixed, "the concatenated eval set should give a batch spanning both tasks"
    rows = mixed[0]["task_id"] == 0
    assert (mixed[0]["token_labels"][rows] == IGNORE).all() and (mixed[0]["labels"][~rows] == IGNORE).all()


def tiny(types=("sequence", "token")) -> MultitaskTextClassifier:
    torch.manual_seed(0)
    return MultitaskTextClassifier("minilm", num_labels=[2, 4], task_names=["sst2", "names"], task_types=list(types),
                                   pretrained=False, config_overrides=TINY_BERT, head_dropout=0.0).eval()  # fmt: skip


def test_the_adapter_is_applied_per_example_in_a_mixed_batch() -> None:
    model = tiny()
    bank = apply_hyper_adapters(model, num_tasks=2, bottleneck=4, task_dim=8, hyper_dim=8)
    torch.nn.init.normal_(bank.up_generator.weight, std=0.5)  # adapters that change the output
    ids = torch.randint(1000, 2000, (2, 7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        seq, tok = model.forward_tasks(ids, mask, task_ids=torch.tensor([0, 1]))
        seq0, tok0 = model.forward_tasks(ids[:1], mask[:1], task_ids=torch.tensor([0]))
        seq1, tok1 = model.forward_tasks(ids[1:], mask[1:], task_ids=torch.tensor([1]))
    assert tok0 is None and tok.shape == (2, 7, 4)
    torch.testing.assert_close(seq[0], seq0[0])
    torch.testing.assert_close(tok[1], tok1[0])
    assert (seq[1] == -1e4).all() and (tok[0] == -1e4).all()  # each row only holds its own task's head
    # The adapters differ per task: the same text through task 0's adapters gives other token states.
    set_condition(model, torch.tensor([0]))
    with torch.no_grad():
        as_task0 = model.heads[1](model.encoder(ids[1:], attention_mask=mask[1:]).last_hidden_state)
    assert not torch.allclose(as_task0[0], tok1[0])


def test_token_loss_ignores_untagged_tokens_and_f1_leaves_out_the_outside_tag() -> None:
    model = tiny()
    ids = torch.randint(1000, 2000, (2, 5))
    token_labels = torch.tensor([[IGNORE, 1, 0, 3, IGNORE], [IGNORE, 2, IGNORE, 0, IGNORE]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.full((2,), IGNORE),
             "token_labels": token_labels, "task_id": torch.tensor([1, 1])}  # fmt: skip
    out = model.step(batch, "val")
    logits = out.extras["token_logits"][:, :, :4]
    keep = token_labels != IGNORE
    expected = torch.nn.functional.cross_entropy(logits[keep], token_labels[keep])
    torch.testing.assert_close(out.loss, expected)
    counts = _tag_counts(4)
    # target O, B, I, NUM, O, B ; prediction O, B, O, NUM, B, I -> tags 1..3: tp = 2, fp = 2, fn = 2
    counts.update(torch.tensor([0, 1, 0, 3, 1, 2]), torch.tensor([0, 1, 2, 3, 0, 1]))
    assert float(_f1_without_outside(counts.compute())) == pytest.approx(2 * 2 / (2 * 2 + 2 + 2))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    pred = model.predict_step({**batch, "attention_mask": mask, "task_id": torch.tensor([0, 1]), "index": torch.arange(2)}, 0)
    assert (pred["token_preds"][0] == IGNORE).all() and (pred["token_preds"][1] >= 0).all()  # row 0: a sentence task
    assert pred["preds"].shape == (2,)
    with pytest.raises(SstkitError, match="model.task_types must be 2 entries"):
        tiny(types=("sequence", "ner"))


def test_fit_logs_token_accuracy_f1_and_the_mean(data_dir: Path, tmp_path: Path) -> None:
    L.seed_everything(0)
    dm = MultitaskTextDataModule(tasks=["sst2", "agnews_names"], data_dir=str(data_dir), k_shot=2, batch_size=4,
                                 max_length=24, limit_eval_samples=8, task_args={"sst2": {"val_split": "test"}})  # fmt: skip
    model = tiny()
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[HyperAdapters(bottleneck=4, task_dim=8, hyper_dim=8)], default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, dm)
    trainer.validate(model, dm, verbose=False)
    m = trainer.callback_metrics
    assert 0.0 <= float(m["val/f1/names"]) <= 1.0
    assert float(m["val/acc/mean"]) == pytest.approx((float(m["val/acc/sst2"]) + float(m["val/acc/names"])) / 2)


def test_cli_links_the_task_types(data_dir: Path, write_config, tmp_path: Path) -> None:
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 2, "num_sanity_val_steps": 0,
                    "enable_model_summary": False, "log_every_n_steps": 1, "val_check_interval": 2},
        "model": {"class_path": "sstkit.models.MultitaskTextClassifier",
                  "init_args": {"backbone": "minilm", "pretrained": False, "config_overrides": TINY_BERT,
                                "task_names": ["sst2", "names"]}},
        "data": {"class_path": "sstkit.datamodules.MultitaskTextDataModule",
                 "init_args": {"tasks": ["sst2", "agnews_names"], "data_dir": str(data_dir), "k_shot": 2,
                               "batch_size": 4, "max_length": 16, "limit_eval_samples": 4}},
    }  # fmt: skip
    cli = run_cli("fit", "--config", str(write_config(config)), "--run_root", str(tmp_path), "--name", "tagging")
    assert cli.model.task_types == ["sequence", "token"] and cli.model.task_labels == [2, 4]
    assert "val/f1/names" in cli.trainer.callback_metrics
