"""The bag-of-words classifier family: fits on SST-2 through the CLI and loads back as an attack victim."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from support import run_cli, summary

from sstkit.commands.attack import load_victim
from sstkit.errors import SstkitError
from sstkit.functional.attacks.victim import Victim
from sstkit.models import BagOfWordsClassifier


def bow_config(data_dir: Path, **trainer: object) -> dict:
    config = tiny_config(data_dir, **trainer)
    config["model"] = {"class_path": "sstkit.models.BagOfWordsClassifier",
                       "init_args": {"tokenizer": "minilm", "embed_dim": 8, "lr": 0.05}}
    return config


def test_fits_two_batches_and_loads_as_a_victim(write_config, data_dir: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run_cli("fit", "--config", str(write_config(bow_config(data_dir, max_steps=2, val_check_interval=2))),
            "--name", "bow", "--run_root", str(runs))
    record = summary(runs, "bow")
    assert record["status"] == "finished" and record["global_step"] == 2 and "val/acc" in record["metrics"]
    ckpt = runs / "bow" / "seed0" / "checkpoints" / "last.ckpt"
    model, tokenizer, source = load_victim(str(ckpt))
    assert isinstance(model, BagOfWordsClassifier) and source == "minilm" and not model.training
    trained = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]["embeddings.weight"]
    assert torch.equal(model.embeddings.weight, trained)
    assert not torch.equal(trained, BagOfWordsClassifier(vocab_size=len(tokenizer), embed_dim=8).embeddings.weight)
    preds = Victim(model, tokenizer, batch_size=4).predict(["a gorgeous film", "dull and lifeless", "ok"])
    assert len(preds) == 3 and set(preds) <= {0, 1}


def test_mean_ignores_padding_and_word_order() -> None:
    torch.manual_seed(0)
    model = BagOfWordsClassifier(vocab_size=20, embed_dim=4).eval()
    ids, mask = torch.tensor([[3, 5, 7, 0]]), torch.tensor([[1, 1, 1, 0]])
    logits = model(ids, mask)
    assert torch.allclose(logits, model(torch.tensor([[7, 3, 5, 9, 9]]), torch.tensor([[1, 1, 1, 0, 0]])))
    expected = model.head(model.embeddings(torch.tensor([3, 5, 7])).mean(0, keepdim=True))
    assert torch.allclose(logits, expected)
    assert model.get_input_embeddings() is model.embeddings


def test_bad_arguments_are_named() -> None:
    with pytest.raises(SstkitError, match="model.embed_dim"):
        BagOfWordsClassifier(vocab_size=20, embed_dim=0)
    with pytest.raises(SstkitError, match="model.num_labels"):
        BagOfWordsClassifier(vocab_size=20, num_labels=1)
