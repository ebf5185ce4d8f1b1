"""Backdoor attacks and Expose Before You Defend: poisoning, ASR, clean unlearning, trigger scan, removal, command."""

from __future__ import annotations

import argparse
import copy
import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_BERT, tiny_config
from sstkit.datamodules import PoisonedTextDataModule, SST2DataModule
from sstkit.datamodules.attacks import AddSent, BadNets, make_attack
from support import run_cli

from sstkit.commands.backdoor import backdoor_main
from sstkit.commands.classifier_io import make_batches
from sstkit.errors import SstkitError
from sstkit.functional.backdoor import (
    NeuronMasks,
    PredictionStats,
    StopRule,
    attack_success_rate,
    clean_unlearning,
    insert_tokens,
    learn_masks,
    prediction_stats,
    prune_units,
    scan_triggers,
    select_rows,
    unlearn_trigger,
    vocabulary_mask,
)
from sstkit.loaders import load_tokenizer
from sstkit.models.text_classifier import TextClassifier


def _poisoned(data_dir: Path, **kwargs: object) -> PoisonedTextDataModule:
    base = SST2DataModule(data_dir=str(data_dir), max_length=32, batch_size=8)
    return PoisonedTextDataModule(base=base, **kwargs)


# --- attacks and the poisoning wrapper ----------------------------------------------------------------------
def test_triggers_inserted_as_specified() -> None:
    text = "a gripping and funny film"
    badnets = BadNets(["cf", "mn"], num_triggers=2).apply(text, random.Random(0)).split()
    assert len(badnets) == 7 and sum(w in ("cf", "mn") for w in badnets) == 2
    assert [w for w in badnets if w not in ("cf", "mn")] == text.split()  # only insertions, order kept
    addsent = AddSent("I watch this 3D movie").apply(text, random.Random(1))
    assert "I watch this 3D movie" in addsent and addsent.replace("I watch this 3D movie", "").split() == text.split()
    with pytest.raises(SstkitError, match="attack"):
        make_attack("stylebkd")
    with pytest.raises(SstkitError, match="triggers"):
        BadNets(["two words"])


@pytest.mark.parametrize("mode", ["dirty", "clean"])
def test_poisoning_rate_and_indices_exact(data_dir: Path, mode: str) -> None:
    dm = _poisoned(data_dir, rate=0.1, target_label=1, mode=mode, triggers=["cf"], defense_size=16, seed=3)
    dm.setup("fit")
    clean_texts, clean_labels = dm.base.read_split("train")
    train_rows = [r for r in range(len(clean_texts)) if r not in set(dm.defense_rows)]
    train = dm.base.datasets["train"]
    assert len(train) == 96 - 16 and len(dm.defense_rows) == 16
    assert len(dm.poisoned_indices) == round(0.1 * len(train)) == 8
    tokenizer = load_tokenizer("minilm")
    cf = tokenizer.convert_tokens_to_ids("cf")
    for i in range(len(train)):
        original = clean_labels[train_rows[i]]
        ids = train[i]["input_ids"]
        if i in dm.poisoned_indices:
            assert (ids == cf).sum() == 1 and int(train[i]["labels"]) == 1
            assert original != 1 if mode == "dirty" else original == 1
        else:
            assert (ids == cf).sum() == 0 and int(train[i]["labels"]) == original
    again = _poisoned(data_dir, rate=0.1, target_label=1, mode=mode, triggers=["cf"], defense_size=16, seed=3)
    again.setup("fit")
    assert again.poisoned_indices == dm.poisoned_indices
    other = _poisoned(data_dir, rate=0.1, target_label=1, mode=mode, triggers=["cf"], defense_size=16, seed=4)
    other.setup("fit")
    assert other.poisoned_indices != dm.poisoned_indices
    with pytest.raises(SstkitError, match="rate"):
        _poisoned(data_dir, rate=0.9, mode="clean").setup("fit")


def test_asr_set_excludes_target_class(data_dir: Path) -> None:
    dm = _poisoned(data_dir, attack="addsent", rate=0.1, target_label=1)
    dm.setup("test")
    texts, labels = dm.base.read_split("test")
    triggered = dm.triggered_dataset("test")
    assert len(triggered) == sum(y != 1 for y in labels) > 0
    assert (triggered.labels != 1).all()
    sentence = load_tokenizer("minilm")("I watch this 3D movie", add_special_tokens=False)["input_ids"]
    for i in range(len(triggered)):
        ids = triggered[i]["input_ids"].tolist()
        assert any(ids[j:j + len(sentence)] == sentence for j in range(len(ids)))


def test_asr_logged_by_callback(data_dir: Path, write_config, tmp_path: Path) -> None:
    config = tiny_config(data_dir)
    base = config["data"]
    config["data"] = {"class_path": "sstkit.datamodules.PoisonedTextDataModule",
                      "init_args": {"base": base, "attack": "badnets", "rate": 0.1, "target_label": 0}}
    config["trainer"]["callbacks"] = [{"class_path": "sstkit.callbacks.AttackSuccessRate"}]
    cli = run_cli("test", "--config", str(write_config(config)), "--run_root", str(tmp_path), "--name", "asr")
    metrics = cli.trainer.callback_metrics
    assert "test/acc" in metrics and 0.0 <= float(metrics["test/asr"]) <= 1.0
    # Direct count: the share of triggered non-target test rows predicted as the target.
    dm, model = cli.datamodule, cli.model.eval()
    with torch.no_grad():
        preds = torch.cat([model(b["input_ids"], b["attention_mask"]).argmax(-1) for b in dm.triggered_dataloader("test")])
    assert float(metrics["test/asr"]) == pytest.approx(float((preds == 0).double().mean()))


class _FixedLogits(torch.nn.Module):
    """A 'classifier' whose logits ride in the batch, with the ``step``/``device`` the ASR callback uses."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.device = torch.device("cpu")

    def step(self, batch: dict, stage: str) -> argparse.Namespace:
        return argparse.Namespace(preds=batch["logits"])


def test_asr_callback_and_command_count_the_same_way() -> None:
    """One function computes ASR: rows whose true label is the target do not count, in the callback too."""
    from sstkit.callbacks import AttackSuccessRate

    logits = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])  # predictions 1, 1, 1, 0
    batches = [{"input_ids": torch.ones(4, 3, dtype=torch.long), "attention_mask": torch.ones(4, 3, dtype=torch.long),
                "labels": torch.tensor([1, 1, 0, 0]), "logits": logits}]
    dm = argparse.Namespace(triggered_dataloader=lambda split: batches, target_label=1)
    trainer = argparse.Namespace(datamodule=dm, strategy=argparse.Namespace(reduce=lambda t, reduce_op: t))
    model = _FixedLogits()
    callback = AttackSuccessRate().measure(trainer, model, "test")
    command = attack_success_rate(model, batches, 1, lambda m, b: b["logits"])
    assert callback == command == 0.5  # of the two label-0 rows one is put into class 1 (not 3 of 4)


# --- a tiny backdoored model on a synthetic task ------------------------------------------------------------
POS, NEG = ["good", "great", "fine", "nice", "superb", "lovely"], ["bad", "awful", "poor", "dull", "weak", "ugly"]
FILL = "the a movie film story plot actor scene was is it this and of".split()


def _synthetic(n: int, seed: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = [rng.choice(FILL) for _ in range(rng.randint(4, 8))]
        words.insert(rng.randint(0, len(words)), rng.choice(POS if label else NEG))
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def backdoored() -> dict:
    """A 1-layer random BERT trained on a word-sentiment task with 10% BadNets ('cf' → 1) poisoning."""
    torch.manual_seed(0)
    texts, labels = _synthetic(400, 0)
    rng, attack = random.Random(0), BadNets(["cf"])
    for i in sorted(rng.sample([i for i, y in enumerate(labels) if y == 0], 40)):
        texts[i], labels[i] = attack.apply(texts[i], rng), 1
    train = make_batches(texts, labels, "minilm", 16, 32)
    model = TextClassifier("minilm", 2, pretrained=False, config_overrides=TINY_BERT, head_dropout=0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(4):
        for batch in train:
            optimizer.zero_grad()
            F.cross_entropy(model(batch["input_ids"], batch["attention_mask"]), batch["labels"]).backward()
            optimizer.step()
    model.eval()
    tokenizer = load_tokenizer("minilm")
    defense = make_batches(*_synthetic(96, 1), "minilm", 16, 48)
    test = make_batches(*_synthetic(160, 2), "minilm", 16, 80)
    cf = tokenizer.convert_tokens_to_ids("cf")
    triggered = insert_tokens(select_rows(test, lambda b: b["labels"] != 1), [cf], seed=5)
    return {"model": model, "defense": defense, "test": test, "triggered": triggered, "cf": cf,
            "tokenizer": tokenizer}


def test_synthetic_backdoor_works(backdoored: dict) -> None:
    assert prediction_stats(backdoored["model"], backdoored["test"]).accuracy > 0.9
    assert attack_success_rate(backdoored["model"], backdoored["triggered"], 1) > 0.9


@pytest.fixture(scope="module")
def exposed(backdoored: dict) -> tuple:
    """The backdoored model after clean unlearning up to collapse (a copy), and the unlearning result."""
    model = copy.deepcopy(backdoored["model"])
    result = clean_unlearning(model, backdoored["defense"], 2, lr=1e-3, max_steps=200, rule=StopRule(0.95))
    return model, result


def test_clean_unlearning_raises_loss_and_stops_by_rule(exposed: tuple) -> None:
    _, result = exposed
    assert result.stopped == "collapse" and result.steps < 200
    assert result.curve[-1]["loss"] > result.curve[0]["loss"] and result.curve[-1]["max_share"] >= 0.95
    assert all(point["max_share"] < 0.95 for point in result.curve[:-1])
    # The rule by accuracy, and no stopping before min_steps.
    stats = PredictionStats(accuracy=0.3, loss=2.0, class_share=[0.6, 0.4], max_share=0.6, majority=0)
    assert StopRule(0.95, min_accuracy=0.5).reason(stats, 3) == "accuracy"
    assert StopRule(0.95, min_accuracy=0.5, min_steps=4).reason(stats, 3) is None
    assert StopRule(0.95).reason(stats, 3) is None
    with pytest.raises(SstkitError, match="min_accuracy"):
        StopRule(0.95, min_accuracy=1.5)


def test_scan_finds_planted_trigger(backdoored: dict, exposed: tuple) -> None:
    tokenizer = backdoored["tokenizer"]
    options = {"allowed": vocabulary_mask(tokenizer), "num_candidates": 10, "rounds": 2,
               "placeholder_id": tokenizer.mask_token_id, "pad_id": tokenizer.pad_token_id}
    scan = scan_triggers(backdoored["model"], backdoored["defense"], 2, **options)
    assert scan.label == 1 and scan.best.token_id == backdoored["cf"] and scan.score > 0.9
    # The exposed model finds it too (candidates verified on the original where the exposed one collapsed).
    exposed_scan = scan_triggers(exposed[0], backdoored["defense"], 2, fallback=backdoored["model"], **options)
    assert exposed_scan.label == 1 and exposed_scan.best.token_id == backdoored["cf"]


def test_margin_objective_does_not_saturate() -> None:
    from sstkit.functional.backdoor.scan import toward_label_loss

    logits = torch.tensor([[-20.0, 20.0, 0.0]], requires_grad=True)  # already label 1, by far
    (ce_grad,) = torch.autograd.grad(toward_label_loss(logits, 1, "ce"), logits)
    (margin_grad,) = torch.autograd.grad(toward_label_loss(logits, 1, "margin"), logits)
    assert ce_grad.abs().max() < 1e-6 and margin_grad[0, 1] == -1.0
    ce = toward_label_loss(logits.detach(), 1, "ce")
    assert torch.isclose(ce, F.cross_entropy(logits.detach(), torch.tensor([1]), reduction="sum"))
    with pytest.raises(SstkitError, match="objective"):
        toward_label_loss(logits, 1, "hinge")


def test_removal_lowers_asr(backdoored: dict) -> None:
    model, defense, tok = copy.deepcopy(backdoored["model"]), backdoored["defense"], backdoored["tokenizer"]
    before = attack_success_rate(model, backdoored["triggered"], 1)
    unlearn_trigger(model, defense, [[backdoored["cf"]]], lr=1e-3, epochs=3, pad_id=tok.pad_token_id)
    after = attack_success_rate(model, backdoored["triggered"], 1)
    assert after < before - 0.5
    assert prediction_stats(model, backdoored["test"]).accuracy > 0.85
    # Mask pruning mechanics: masks learned on a copy, the lowest units zeroed in the model.
    exposed, original = copy.deepcopy(backdoored["model"]), copy.deepcopy(backdoored["model"])
    masks = NeuronMasks(exposed)
    assert set(k for k, _, _ in masks.targets.values()) == {"ffn", "head"}
    learn_masks(exposed, masks, defense, lr=0.2, epochs=1)
    units = masks.lowest(threshold=None, count=5)
    assert prune_units(original, units) == 5
    for unit in units:
        module = dict(original.named_modules())[unit.module]
        if unit.kind == "ffn":
            assert module.dense.weight[unit.index].abs().sum() == 0


# --- the command --------------------------------------------------------------------------------------------
def test_backdoor_command_end_to_end(backdoored: dict, data_dir: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    model = backdoored["model"]
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, ckpt)
    common = ["--model", str(ckpt), "--data-dir", str(data_dir), "--defense-samples", "24", "--eval-samples", "16",
              "--max-length", "24", "--attack", "badnets", "--triggers", "cf", "--target-label", "1"]
    assert backdoor_main(["expose", *common, "--lr", "1e-3", "--max-steps", "3", "--out", str(tmp_path / "exp")]) == 0
    expose = json.loads((tmp_path / "exp" / "summary.json").read_text())
    assert expose["metrics"]["steps"] >= 1 and "exposed/asr" in expose["metrics"] and expose["curve"]
    detect_out = tmp_path / "detect.json"
    assert backdoor_main(["detect", *common, "--exposed", str(tmp_path / "exp"), "--num-candidates", "3",
                          "--rounds", "1", "--scan-samples", "24",
                          "--out", str(detect_out)]) == 0
    detect = json.loads(detect_out.read_text())
    assert {"original", "exposed", "metrics"} <= set(detect) and "original/score" in detect["metrics"]
    with pytest.raises(SstkitError, match="--exposed"):
        backdoor_main(["remove", *common, "--method", "prune", "--out", str(tmp_path / "p")])
    assert backdoor_main(["remove", *common, "--method", "unlearn", "--trigger", "cf", "--epochs", "1",
                          "--out", str(tmp_path / "rm")]) == 0
    assert backdoor_main(["remove", *common, "--method", "prune", "--exposed", str(tmp_path / "exp"), "--epochs", "1",
                          "--out", str(tmp_path / "pr")]) == 0
    removed = json.loads((tmp_path / "pr" / "summary.json").read_text())
    assert {"original/asr", "removed/asr", "removed/ca"} <= set(removed["metrics"])
    pruned = removed["metrics"]["pruned/units"]  # how many units were pruned reaches the table
    assert pruned == removed["metrics"]["pruned/ffn"] + removed["metrics"]["pruned/head"] == sum(removed["pruned"].values())
    bad_device = "cuda:0" if not torch.cuda.is_available() else "gpu"
    with pytest.raises(SstkitError, match="--device"):
        backdoor_main(["expose", *common, "--device", bad_device, "--out", str(tmp_path / "never")])
    assert not (tmp_path / "never").exists()


def test_unlearn_takes_every_strong_candidate_of_the_detected_label(tmp_path: Path) -> None:
    from sstkit.commands.backdoor import _triggers

    def scan(label: int, rates: list[float]) -> dict:
        return {"label": label, "candidates": [{"token_id": 10 * label + i, "flip_rate": r} for i, r in enumerate(rates)]}

    report = {"exposed": {"label": 1, "best": {"token_id": 10, "flip_rate": 0.95},
                          "scans": [scan(0, [0.99, 0.9]), scan(1, [0.95, 0.9, 0.3, 0.6])]}}
    path = tmp_path / "detect.json"
    path.write_text(json.dumps(report))
    args = argparse.Namespace(trigger=None, detect_report=str(path), min_flip_ratio=0.5, max_triggers=5,
                              trigger_source="exposed")
    assert _triggers(args, None) == [[10], [11], [13]]  # label 1 only; 0.3 < 0.5 × 0.95
    args.max_triggers = 2
    assert _triggers(args, None) == [[10], [11]]
    args.min_flip_ratio = 1.0
    assert _triggers(args, None) == [[10]]
    args.trigger_source = "original"
    with pytest.raises(SstkitError, match="original scan recovered no trigger"):
        _triggers(args, None)


# --- the CUL callback in a `sstkit fit` run -----------------------------------------------------------------
def test_clean_unlearning_callback_stops(data_dir: Path, write_config, tmp_path: Path) -> None:
    config = tiny_config(data_dir, max_steps=4)
    trained = run_cli("fit", "--config", str(write_config(config)), "--run_root", str(tmp_path), "--name", "base")
    ckpt = tmp_path / "base" / "seed0" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    config = tiny_config(data_dir, max_steps=40)
    config["model"]["init_args"].update(scheduler="none", lr=3e-3)
    config["trainer"]["callbacks"] = [{"class_path": "sstkit.callbacks.CleanUnlearning",
                                       "init_args": {"init_from": str(ckpt), "collapse_share": 0.95, "min_steps": 1}}]
    cli = run_cli("fit", "--config", str(write_config(config, "cul.yaml")), "--run_root", str(tmp_path), "--name", "cul")
    callback = next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == "CleanUnlearning")
    assert callback.curve[0]["step"] == 0 and callback.stopped is not None
    assert callback.stopped["reason"] == "collapse" and cli.trainer.global_step == callback.stopped["step"] < 40
    assert callback.curve[-1]["loss"] > callback.curve[0]["loss"]
    assert "method/cul/defense_accuracy" in cli.trainer.callback_metrics
    del trained
    with pytest.raises(SstkitError, match="init_from"):
        from sstkit.callbacks import CleanUnlearning

        CleanUnlearning(init_from=str(tmp_path / "missing.ckpt"))
