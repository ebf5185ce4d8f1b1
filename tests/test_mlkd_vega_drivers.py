"""The MLKD and Vega benchmark drivers: the scale options reach every run, finished work is read back instead of
retrained, and the tables carry what the READMEs cite (nothing here trains a model)."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_run", BENCH / name / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _mlkd_args(mlkd, *argv: str):
    return mlkd.build_parser().parse_args(list(argv))


def test_mlkd_scale_reaches_fit_and_scoring() -> None:
    mlkd = _module("mlkd")
    args = _mlkd_args(mlkd, "--model-overrides", "dropout: 0.1, hidden_size: 128", "--bpe-vocab", "4096",
                      "--limit-test", "2000", "--limit-eval-blocks", "16")
    scale = mlkd.scale_of(args)
    assert scale.fit_args == ["--model.init_args.config_overrides={dropout: 0.1, hidden_size: 128}",
                              "--data.init_args.bpe_vocab_size=4096", "--data.init_args.limit_eval_blocks=16"]
    assert (scale.bpe_vocab, scale.limit_test, scale.val_every) == (4096, 2000, None)
    assert mlkd.scale_of(_mlkd_args(mlkd)) == mlkd.Scale()  # no option: the configs' own sizes
    smoke = mlkd.scale_of(_mlkd_args(mlkd, "--smoke"))
    assert smoke.bpe_vocab == 1024 and "--model.init_args.size=tiny" in smoke.fit_args


def test_mlkd_scored_seed_is_read_back_and_tabulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mlkd = _module("mlkd")
    scores = tmp_path / "scores" / "sst2-agnews-s0"
    scores.mkdir(parents=True)
    models = [{"model": "scratch_lm", "auroc": 0.9, "aupr_in": 0.8, "aupr_out": 0.85, "far95": 0.4, "n_id": 4,
               "n_ood": 4}]
    (scores / "metrics.json").write_text(json.dumps({"models": models}))
    monkeypatch.setattr(mlkd, "sstkit", lambda *a: pytest.fail(f"retrained a scored seed: {a}"))
    result = mlkd.run_one("sst2-agnews", 0, tmp_path, 10, mlkd.Scale())
    assert result["models"] == models
    keys = {"setting": "sst2-agnews", "teacher": "scratch_lm", "steps": 250, "pretrain_steps": 0}
    mlkd.table([{**keys, "seed": 0, **models[0]}], tmp_path)
    with (tmp_path / "results.csv").open() as handle:
        assert next(csv.DictReader(handle))["auroc"] == "0.9"
    # One run: its value alone (no "± 0.00" posing as a measured spread); two runs: mean ± sample std.
    assert "| sst2-agnews | scratch_lm | 250 | 0 | scratch_lm | 1 | 90.00 | 80.00 |" in \
        (tmp_path / "results.md").read_text()
    mlkd.table([{**keys, "seed": s, **models[0], "auroc": a} for s, a in ((0, 0.9), (1, 0.8))], tmp_path)
    assert "| sst2-agnews | scratch_lm | 250 | 0 | scratch_lm | 2 | 85.00 ± 7.07 |" in \
        (tmp_path / "results.md").read_text()
    assert mlkd.read_records(tmp_path / "results.csv")[1]["auroc"] == 0.8
    # A new run's rows replace those with the same keys and keep the others (an earlier setting or scale).
    old = mlkd.read_records(tmp_path / "results.csv")
    new = [{**keys, "seed": "1", **models[0], "auroc": 0.7}, {**keys, "steps": 300, "seed": "0", **models[0]}]
    merged = mlkd.merge(old, new)
    assert [(r["seed"], str(r["steps"]), r["auroc"]) for r in merged] == [("0", "250", 0.9), ("1", "250", 0.7),
                                                                            ("0", "300", 0.9)]


def _summary(folder: Path, acc: float, seconds: float, steps: int, **extra: float) -> None:
    folder.mkdir(parents=True)
    metrics = {"test/acc": acc, "test/f1": acc, **extra}
    folder.joinpath("summary.json").write_text(
        json.dumps({"metrics": metrics, "train_time_s": seconds, "global_step": steps}))


def test_vega_records_carry_step_ratio_and_pseudo_label_count(tmp_path: Path) -> None:
    vega = _module("vega")
    _summary(tmp_path / "vega_baseline_2000" / "seed0", 0.8, 100.0, 50)
    _summary(tmp_path / "vega_freelb_2000" / "seed0", 0.81, 250.0, 50)
    _summary(tmp_path / "vega_transductive_2000" / "seed0", 0.82, 150.0, 50,
             **{"method/transductive/pseudo_labels": 312.0})
    _summary(tmp_path / "vega_rtd_simcse_2000" / "seed0", 0.79, 100.0, 50)
    _summary(tmp_path / "vega_rtd_pretrain_4000" / "seed0", 0.0, 400.0, 125)
    records = tmp_path / "records"
    vega.write_table_records(tmp_path, [0], 2000, None, 4000, records)
    read = {arm: json.loads((records / f"{arm}_2000" / "seed0" / "summary.json").read_text())
            for arm in ("baseline", "freelb", "transductive", "rtd_simcse")}
    assert read["freelb"]["metrics"]["step_time_ratio"] == pytest.approx(2.5)
    assert read["transductive"]["metrics"]["pseudo_labels"] == 312.0
    assert read["baseline"]["metrics"]["pseudo_labels"] == 0.0
    assert read["transductive"]["config"]["transductive"] is True
    # the pretraining's steps and cost go to the RTD arm only
    assert read["rtd_simcse"]["metrics"]["pretrain_steps"] == 125
    assert read["rtd_simcse"]["metrics"]["pretrain_time_ratio"] == pytest.approx(4.0)
    assert read["freelb"]["metrics"]["pretrain_steps"] == 0
    assert not (records / "smart_2000").exists()  # an arm without a run gets no record


def test_vega_threshold_reaches_the_transductive_run_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vega = _module("vega")
    calls = []
    monkeypatch.setattr(vega, "sstkit", lambda *a: calls.append(a))
    monkeypatch.setattr("sys.argv", ["run.py", "--runs", str(tmp_path), "--records", str(tmp_path / "records"),
                                     "--seeds", "0", "--arms", "baseline", "transductive", "rtd_simcse",
                                     "--transductive-threshold", "0.7", "--rtd-pretrain-samples", "640"])
    vega.main()
    fits = {c[c.index("--name") + 1]: c for c in calls if c[0] == "fit"}
    assert fits["vega_transductive_2000"][-2:] == ("--trainer.callbacks.init_args.threshold", "0.7")
    assert "--trainer.callbacks.init_args.threshold" not in fits["vega_baseline_2000"]
    # RTD + SimCSE pretrains first, on its own sample count, and the arm fine-tunes from the exported encoder
    names = [c[c.index("--name") + 1] for c in calls if c[0] == "fit"]
    assert names[0] == "vega_rtd_pretrain_640"
    pretrain = fits["vega_rtd_pretrain_640"]
    assert pretrain[pretrain.index("--data.init_args.limit_train_samples") + 1] == "640"
    encoder = pretrain[pretrain.index("--trainer.callbacks.init_args.export_dir") + 1]
    assert fits["vega_rtd_simcse_2000"][-2:] == ("--model.init_args.backbone", encoder)
    assert "--model.init_args.backbone" not in fits["vega_baseline_2000"]
    assert calls[-1][0] == "table"


def test_mlkd_pretraining_corpus_has_every_class_and_no_test_text(tmp_path: Path) -> None:
    mlkd = _module("mlkd")
    data = tmp_path / "data"
    for folder in ("agnews", "sst2", "wikitext2"):
        (data / folder).mkdir(parents=True)
    classes = ("World", "Sports", "Business", "Sci/Tech")
    (data / "agnews" / "train.tsv").write_text("".join(f"train news {i}\t{c}\n" for i, c in enumerate(classes * 3)))
    (data / "agnews" / "test.tsv").write_text("test news 0\tWorld\ntrain news 5\tSports\n")  # a duplicate too
    (data / "sst2" / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"review {i}\t1\n" for i in range(8)))
    (data / "sst2" / "dev.tsv").write_text("sentence\tlabel\nreview 3\t0\n")
    (data / "wikitext2" / "valid.txt").write_text(" = Heading = \n\n A wiki line . \n")
    mlkd.prepare_pretrain(data, tmp_path / "out", seed=0)
    texts = [r[0] for f in ("train.tsv", "dev.tsv") for r in mlkd._rows(tmp_path / "out" / f, True)]
    assert "train news 5" not in texts and "review 3" not in texts and "= Heading =" not in texts
    assert {t for t in texts if t.startswith("train news")} == {f"train news {i}" for i in range(12) if i != 5}
    assert "A wiki line ." in texts and len(texts) == 11 + 7 + 1
    args = _mlkd_args(mlkd, "--pretrain-steps", "400", "--batch-size", "16", "--arms", "mlkd")
    scale = mlkd.scale_of(args)
    assert (scale.pretrain_steps, scale.arms, scale.fit_args) == (400, ("mlkd",), ["--data.init_args.batch_size=16"])
