"""``sstkit ood score``: per-example perplexities of LM checkpoints on ID and OOD texts, and the metric table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from sstkit.commands.ood import load_causal_lm, ood_main, score_texts
from sstkit.errors import SstkitError
from sstkit.models import CausalLM

ID = ["a fine film", "a dull film", "quite good acting", "the plot is thin", "warm and funny", "too long by half"]
OOD = ["stocks fell today in tokyo", "team wins the cup final", "oil prices rise again"]


def setup_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    monkeypatch.setenv("SSTKIT_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    (data / "id").mkdir(parents=True)
    (data / "id" / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t1\n" for t in ID * 5))
    (data / "id" / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t1\n" for t in ID))
    (data / "news.tsv").write_text("".join(f"{t}\tWorld\n" for t in OOD))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {"class_path": "sstkit.datamodules.ColumnCorpusDataModule", "init_args": {
        "data_dir": str(data), "dataset_folder": "id", "text_column": "sentence", "bpe_vocab_size": 300,
        "block_size": 8}}}))
    torch.manual_seed(0)
    model = CausalLM("tiny", vocab_size=300)
    ckpt = tmp_path / "lm.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, ckpt)
    return data, config, ckpt


def test_score_writes_per_example_scores_and_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, config, ckpt = setup_run(tmp_path, monkeypatch)
    out = tmp_path / "out"
    assert ood_main(["score", "--model", f"scratch={ckpt}", "--model", str(ckpt), "--data-config", str(config),
                     "--id", f"{data}/id/dev.tsv:sentence", "--ood", f"{data}/news.tsv:0", "--batch-size", "4",
                     "--device", "cpu", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == 2 * (len(ID) + len(OOD)) and {r["model"] for r in rows} == {"scratch", "lm"}
    metrics = json.loads((out / "metrics.json").read_text())["models"]
    assert [m["model"] for m in metrics] == ["scratch", "lm"]
    assert all(0.0 <= m[k] <= 1.0 for m in metrics for k in ("auroc", "aupr_in", "aupr_out", "far95"))
    assert metrics[0]["n_id"] == len(ID) and "| scratch |" in (out / "metrics.md").read_text()
    # Batched, padded scores equal one-text-at-a-time scores.
    from sstkit.datamodules import ColumnCorpusDataModule

    tok = ColumnCorpusDataModule(data_dir=str(data), dataset_folder="id", bpe_vocab_size=300, block_size=8).tokenizer
    model = load_causal_lm(str(ckpt))
    alone = torch.cat([score_texts(model, tok, [t], 1, torch.device("cpu")) for t in OOD])
    batched = torch.tensor([float(r["ppl"]) for r in rows if r["model"] == "scratch" and r["set"] == "ood"])
    torch.testing.assert_close(batched, alone.float(), rtol=1e-4, atol=1e-4)


def test_bad_inputs_name_the_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, config, ckpt = setup_run(tmp_path, monkeypatch)
    base = ["score", "--model", str(ckpt), "--data-config", str(config), "--out", str(tmp_path / "o")]
    with pytest.raises(SstkitError, match="--ood missing.tsv: no such file"):
        ood_main([*base, "--id", f"{data}/id/dev.tsv:sentence", "--ood", "missing.tsv"])
    with pytest.raises(SstkitError, match="no such checkpoint"):
        ood_main(["score", "--model", str(tmp_path / "none.ckpt"), "--data-config", str(config), "--id",
                  f"{data}/id/dev.tsv:sentence", "--ood", f"{data}/news.tsv:0", "--out", str(tmp_path / "o")])


def test_a_tokenizer_that_does_not_fit_the_model_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, config, ckpt = setup_run(tmp_path, monkeypatch)
    args = ["score", "--model", str(ckpt), "--data-config", str(config), "--id", f"{data}/id/dev.tsv:sentence",
            "--ood", f"{data}/news.tsv:0", "--device", "cpu", "--out", str(tmp_path / "o")]
    # --set rebuilds the tokenizer with a training-time override: here one the 300-token model does not fit.
    with pytest.raises(SstkitError, match=r"has \d+ tokens but the model has 300 embeddings"):
        ood_main([*args, "--set", "data.init_args.bpe_vocab_size=400"])
    with pytest.raises(SstkitError, match="--set 'oops': expected KEY=VALUE"):
        ood_main([*args, "--set", "oops"])


def test_export_writes_a_folder_that_model_pretrained_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An sstkit-pretrained LM becomes a Hugging Face folder: the fine-tuned LM / MLKD teacher starts from it.
    _, config, ckpt = setup_run(tmp_path, monkeypatch)
    out = tmp_path / "hf"
    assert ood_main(["export", "--model", str(ckpt), "--data-config", str(config), "--out", str(out)]) == 0
    from sstkit.loaders import load_tokenizer

    again = CausalLM(pretrained=str(out))
    original = load_causal_lm(str(ckpt))
    for (name, a), b in zip(original.lm.state_dict().items(), again.lm.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    assert len(load_tokenizer(str(out))) <= again.lm.config.vocab_size
    with pytest.raises(SstkitError, match=r"has \d+ tokens but the model has 300 embeddings"):
        ood_main(["export", "--model", str(ckpt), "--data-config", str(config), "--set",
                  "data.init_args.bpe_vocab_size=400", "--out", str(tmp_path / "bad")])
