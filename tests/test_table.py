"""Tests of ``sstkit table``: the four run readers, damaged runs, key checks, config paths, aggregation, the command."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from sstkit.bench.command import table_main
from sstkit.bench.records import MISSING, RunData, Unreadable, get_path, parse_path
from sstkit.bench.spec import load_spec, parse_spec
from sstkit.bench.summary_reader import read_summaries
from sstkit.bench.table import build_table, render_csv, render_markdown
from sstkit.bench.wandb_api import read_wandb_api
from sstkit.bench.wandb_offline import parse_run_file, read_wandb_offline
from sstkit.errors import SstkitError

SST = "sstkit.callbacks.SparseSpectralTraining"


def _config(seed: int, backbone: str = "minilm", rank: int | None = None) -> dict:
    callbacks = [{"class_path": "lightning.pytorch.callbacks.LearningRateMonitor", "init_args": {}}]
    if rank is not None:
        callbacks.append({"class_path": SST, "init_args": {"rank": rank}})
    return {
        "seed_everything": seed,
        "model": {"class_path": "sstkit.models.TextClassifier", "init_args": {"backbone": backbone, "lr": 1e-3}},
        "trainer": {"max_steps": 30, "callbacks": callbacks},
    }


def _write_summary(root: Path, name: str, seed: int, status: str = "finished", **fields) -> Path:
    run_dir = root / name / f"seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "name": name,
        "seed": seed,
        "run_dir": str(run_dir),
        "status": status,
        "config": fields.pop("config", _config(seed)),
        "metrics": fields.pop("metrics", {}),
        "global_step": 30,
        "wall_time_s": 12.0 + seed,
        "train_steps_per_s": 2.5,
        "versions": {"python": "3.11.7"},
        "wandb": {"id": f"{name}-s{seed}", "project": "sstkit", "mode": "offline"},
        "segments": [{"command": "fit", "started": f"2026-01-01T00:00:0{seed}+00:00", "status": status}],
    }
    record.update(fields)
    (run_dir / "summary.json").write_text(json.dumps(record))
    return run_dir


def _run(seed: int, acc: float | None, status: str = "finished", backbone: str = "minilm", **kw) -> RunData:
    metrics = {} if acc is None else {"test/acc": acc}
    return RunData(
        id=f"{backbone}-{seed}-{status}",
        name="sst2",
        seed=seed,
        status=status,
        config=_config(seed, backbone, kw.pop("rank", None)),
        metrics=metrics,
        **kw,
    )


# --- config paths ---------------------------------------------------------------------------------------------


def test_get_path_resolves_nested_keys_callbacks_and_missing_paths():
    cfg = _config(0, rank=8)
    assert get_path(cfg, "model.init_args.backbone") == "minilm"
    assert get_path(cfg, "trainer.callbacks[SparseSpectralTraining].init_args.rank") == 8
    assert get_path(cfg, f"trainer.callbacks[{SST}].init_args.rank") == 8
    assert get_path(cfg, "trainer.callbacks[1].class_path") == SST
    assert get_path(cfg, "trainer.callbacks[-1].init_args.rank") == 8
    # Missing things are None (or the given default), never an exception.
    assert get_path(cfg, "trainer.callbacks[5]") is None
    assert get_path(cfg, "trainer.callbacks[Spectral]") is None  # a suffix of the class name is not a match
    assert get_path(_config(0), "trainer.callbacks[SparseSpectralTraining].init_args.rank") is None
    assert get_path(cfg, "model.init_args.backbone.x", default=MISSING) is MISSING
    assert get_path({"a": None}, "a", default=MISSING) is None
    # A single callback given as a mapping, and configs flattened by a logger, resolve the same way.
    assert (
        get_path(
            {"trainer": {"callbacks": {"class_path": SST, "init_args": {"rank": 4}}}},
            "trainer.callbacks[SparseSpectralTraining].init_args.rank",
        )
        == 4
    )
    assert get_path({"model.init_args.lr": 0.1}, "model.init_args.lr") == 0.1
    for bad in ("", "a..b", "a[", "a[]"):
        with pytest.raises(ValueError):
            parse_path(bad)


# --- readers -------------------------------------------------------------------------------------------------


def test_summary_reader_reads_fields_and_top_level_timings(tmp_path):
    _write_summary(tmp_path, "sst2", 0, metrics={"test/acc": 0.84, "val/acc": 0.85})
    _write_summary(tmp_path, "sst2", 1, status="interrupted", metrics={"val/acc": 0.5})
    _write_summary(tmp_path / "nested" / "deeper", "sst2", 2, status="failed")
    runs = read_summaries(tmp_path)
    assert [(r.seed, r.status) for r in runs] == [(2, "failed"), (0, "finished"), (1, "crashed")]
    run = runs[1]
    assert run.id == "sst2-s0" and run.name == "sst2"
    assert run.metrics == {
        "test/acc": 0.84,
        "val/acc": 0.85,
        "global_step": 30.0,
        "wall_time_s": 12.0,
        "train_steps_per_s": 2.5,
    }
    assert get_path(run.config, "model.init_args.backbone") == "minilm"
    assert run.extra["versions"]["python"] == "3.11.7"
    (tmp_path / "sst2" / "seed0" / "summary.json").write_text("{not json")
    with pytest.raises(SstkitError, match=r"seed0/summary.json"):
        read_summaries(tmp_path)
    (tmp_path / "sst2" / "seed1" / "summary.json").write_text('{"name": "sst2", "metrics": [0.5]}')
    unreadable = []
    assert [r.seed for r in read_summaries(tmp_path, unreadable)] == [2]
    assert [(Path(u.path).parent.name, u.reason.split(" (")[0]) for u in unreadable] == [
        ("seed0", "line 1: run summary is not valid JSON"), ("seed1", "metrics must be a JSON object, got list")
    ]
    with pytest.raises(SstkitError, match="not found"):
        read_summaries(tmp_path / "nope")


@pytest.fixture(scope="module")
def offline_runs(tmp_path_factory):
    """Real offline W&B runs: two finished seeds, one failed, and one resumed over two segments."""
    root = tmp_path_factory.mktemp("wandb_runs")
    with pytest.MonkeyPatch.context() as mp:
        for var, value in {
            "WANDB_SILENT": "true",
            "WANDB_MODE": "offline",
            "WANDB_CONFIG_DIR": str(root / "cfg"),
            "WANDB_CACHE_DIR": str(root / "cache"),
            "WANDB_DATA_DIR": str(root / "data"),
        }.items():
            mp.setenv(var, value)
        wandb = pytest.importorskip("wandb")
        settings = wandb.Settings(
            x_disable_stats=True, x_disable_meta=True, disable_git=True, save_code=False, console="off"
        )
        ids = {}

        def make(seed, acc, exit_code=0, run_id=None, summary_acc=True):
            run = wandb.init(
                mode="offline",
                dir=str(root),
                project="p",
                name="sst2",
                id=run_id,
                resume="allow",
                config=_config(seed, rank=8),
                settings=settings,
                reinit="finish_previous",
            )
            for step in range(3):
                run.log({"train/loss": 1.0 / (step + 1), "val": {"acc": 0.5 + step / 10}})
            if acc is not None:
                if summary_acc:
                    run.summary["test/acc"] = acc
                else:
                    run.log({"test/acc": acc})
            ids[seed] = run.id
            run.finish(exit_code=exit_code)

        make(0, 0.80)
        make(1, 0.82, summary_acc=False)
        make(2, None, exit_code=1)
        make(3, None, run_id="resumed3")  # fit segment ...
        make(3, 0.90, run_id="resumed3")  # ... then a test segment of the same run
        wandb.teardown()
    return root, ids


def test_wandb_offline_reads_real_runs(offline_runs):
    root, ids = offline_runs
    runs = {r.seed: r for r in read_wandb_offline(root / "wandb")}
    assert sorted(runs) == [0, 1, 2, 3]
    assert runs[0].id == ids[0] and runs[0].name == "sst2" and runs[0].extra["project"] == "p"
    assert runs[0].config == _config(0, rank=8)  # nested dicts and lists come back nested
    assert get_path(runs[0].config, "trainer.callbacks[SparseSpectralTraining].init_args.rank") == 8
    assert runs[0].metrics["test/acc"] == pytest.approx(0.80)
    assert runs[0].metrics["train/loss"] == pytest.approx(1 / 3)
    assert runs[0].metrics["val.acc"] == pytest.approx(0.7)  # nested logged dicts flatten with "."
    assert runs[1].metrics["test/acc"] == pytest.approx(0.82)
    assert [runs[s].status for s in range(4)] == ["finished", "finished", "failed", "finished"]
    assert runs[2].extra["exit_code"] == 1
    # Two segments of one run id merge into one run with the metrics of both.
    assert runs[3].id == "resumed3" and len(runs[3].extra["files"]) == 2
    assert runs[3].metrics["test/acc"] == pytest.approx(0.90) and "train/loss" in runs[3].metrics


def test_wandb_offline_damaged_files_are_unreadable_with_a_reason(offline_runs, tmp_path):
    root, ids = offline_runs
    source = next((root / "wandb").glob(f"offline-run-*-{ids[0]}/run-{ids[0]}.wandb"))
    data = source.read_bytes()
    target = tmp_path / "offline-run-x" / source.name
    target.parent.mkdir()
    for cut in (len(data) - 3, len(data) // 2, 10, 3):
        target.write_bytes(data[:cut])
        with pytest.raises(SstkitError, match="truncated|no W&B header"):
            parse_run_file(target)
        # A caller that wants what is there (a live run) can still have it, marked incomplete.
        run = parse_run_file(target, allow_partial=True)
        assert run.status == "crashed" and run.extra["complete"] is False
        if cut > 1000:
            assert run.id == ids[0] and run.config["model"]["init_args"]["backbone"] == "minilm"
    flipped = bytearray(data)
    flipped[16] ^= 0xFF  # inside the first record's payload (file header 7 bytes, record header 7)
    target.write_bytes(bytes(flipped))
    with pytest.raises(SstkitError, match="corrupt: checksum mismatch"):
        parse_run_file(target)
    target.write_bytes(b"garbage" * 3)
    with pytest.raises(SstkitError, match="not a W&B run file"):
        parse_run_file(target)
    unreadable = []
    assert read_wandb_offline(target.parent, unreadable) == []
    assert unreadable == [Unreadable(str(target), "not a W&B run file (missing the ':W&B' header)")]
    shutil.rmtree(target.parent)


class _FakeApi:
    def __init__(self, runs, fail=False):
        self._runs, self.fail, self.calls = runs, fail, []

    def runs(self, path, filters=None):  # an old wandb without lazy/per_page
        self.calls.append((path, filters))
        if self.fail:
            raise ConnectionError("no network")
        return iter(self._runs)


def test_wandb_api_reader_with_a_fake_api():
    summary = SimpleNamespace(_json_dict={"test/acc": 0.8, "_wandb": {"runtime": 3}, "_runtime": 3, "tag": "x"})
    runs = [
        SimpleNamespace(
            id="a1",
            name="sst2",
            state="finished",
            summary=summary,
            config={"seed_everything": 1, "model": {"init_args": {"backbone": "minilm"}}},
        ),
        SimpleNamespace(
            id="a2",
            name="sst2",
            state="killed",
            summary={"test/acc": 0.1},
            config={"seed_everything": {"value": 2, "desc": None}},
        ),
    ]
    api = _FakeApi(runs)
    got = read_wandb_api("team/proj", filters={"config.seed_everything": 1}, api=api)
    assert api.calls == [("team/proj", {"config.seed_everything": 1})]
    assert [(r.id, r.seed, r.status) for r in got] == [("a1", 1, "finished"), ("a2", 2, "failed")]
    # W&B's _runtime is not sstkit's wall_time_s (summed over segments): it keeps its own name.
    assert got[0].metrics == {"test/acc": 0.8, "_runtime": 3.0}
    assert got[0].config["model"]["init_args"]["backbone"] == "minilm"
    with pytest.raises(SstkitError, match="team/proj.*no network"):
        read_wandb_api("team/proj", api=_FakeApi([], fail=True))


# --- aggregation ---------------------------------------------------------------------------------------------


def _spec(tmp_path, **overrides):
    data = {
        "title": "SST-2",
        "runs": [{"summary": "runs"}],
        "rows": [{"key": "model.init_args.backbone", "label": "Backbone", "values": {"bert": "BERT"}}],
        "metrics": [{"key": "test/acc", "label": "Test acc (%)", "scale": 100, "digits": 2}],
        "expect_runs": 3,
    }
    data.update(overrides)
    return parse_spec(data, tmp_path / "spec.yaml")


def test_mean_std_over_three_seeds_and_notes(tmp_path):
    runs = [
        _run(0, 0.80),
        _run(1, 0.82),
        _run(2, 0.84),
        _run(0, 0.70, backbone="bert"),
        _run(1, None, backbone="bert"),  # finished but never tested
        _run(2, None, status="failed", backbone="bert"),
        _run(3, 0.99, status="crashed"),
        _run(0, 0.10, status="failed", extra={"started": "2020"}),  # an old failed try of seed 0
    ]
    table = build_table(_spec(tmp_path), runs)
    assert [row.values for row in table.rows] == [["bert"], ["minilm"]]  # listed values first
    bert, minilm = table.rows
    assert minilm.n == 3 and not minilm.flagged
    assert minilm.cells[0].mean == pytest.approx(0.82)
    assert minilm.cells[0].std == pytest.approx(0.02)  # sample std, ddof=1
    assert bert.n == 2 and bert.flagged and bert.cells[0].n == 1 and bert.cells[0].std is None
    md = render_markdown(table, command="sstkit table spec.yaml")
    assert "| minilm | 3 | 82.00 ± 2.00 |" in md
    assert "| BERT | 2* | 70.00 (n=1) |" in md
    assert "1 run failed: sst2 seed 2 (bert-2-failed)" in md
    assert "1 run crashed or ended without an exit record: sst2 seed 3" in md
    assert "1 run was superseded by another run of the same row and seed: sst2 seed 0 (minilm-0-failed)" in md
    assert "1 run lacks test/acc: sst2 seed 1 (bert-1-finished)" in md
    assert "Generated by `sstkit table spec.yaml` from 8 runs" in md
    rows = list(csv.DictReader(io.StringIO(render_csv(table))))
    assert list(rows[0]) == ["model.init_args.backbone", "n", "test/acc_mean", "test/acc_std"]
    assert rows[1]["model.init_args.backbone"] == "minilm" and rows[1]["n"] == "3"
    assert float(rows[1]["test/acc_mean"]) == pytest.approx(0.82) and float(rows[1]["test/acc_std"]) == pytest.approx(
        0.02
    )
    assert rows[0]["test/acc_std"] == ""


def test_filters_callback_rows_and_missing_values(tmp_path):
    runs = [_run(0, 0.8, rank=4), _run(1, 0.9, rank=4), _run(0, 0.7), _run(0, 0.5, backbone="bert")]
    spec = _spec(
        tmp_path,
        filters={"model.init_args.backbone": "minilm", "model.init_args.lr": "1e-3"},
        rows=["trainer.callbacks[SparseSpectralTraining].init_args.rank"],
        expect_runs=None,
    )
    table = build_table(spec, runs)
    assert table.runs_matched == 3
    assert [(row.values, row.n) for row in table.rows] == [([4], 2), ([MISSING], 1)]
    md = render_markdown(table)
    assert "| 4 | 2 | 85.00 ± 7.07 |" in md and "| – | 1 | 70.00 |" in md
    assert "from 3 of 4 runs" in md


# --- spec validation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("runs: [{summary: r}]\nmetrics: [test/acc]\ncolumns: []\n", r"spec.yaml: columns: .*unknown key"),
        (
            "runs: [{summary: r}]\nmetrics: [{key: a, scale: big}]\n",
            r"spec.yaml: metrics\[0\].scale: expected a number, got 'big'",
        ),
        ("runs: [{summary: r}]\nmetrics: [{key: a, digits: -1}]\n", r"metrics\[0\].digits: expected an integer from 0"),
        ("metrics: [a]\n", r"spec.yaml: runs: expected this key"),
        ("runs: [{summary: r, wandb: e/p}]\nmetrics: [a]\n", r"runs\[0\]: expected exactly one of"),
        ("runs: [{summary: r}]\nmetrics: [a]\nrows: [{key: 'a..b'}]\n", r"rows\[0\].key: expected a config path"),
        ("runs: [{summary: r}]\nmetrics: [a]\nrows: [{label: x}]\n", r"rows\[0\].key: .*missing"),
        ("runs: [{summary: r}]\nmetrics: [a]\nexpect_runs: 0\n", r"expect_runs: expected an integer of at least 1"),
        ("runs: [{summary: r}]\nmetrics: []\n", r"metrics: expected a non-empty list"),
        ("runs: [{summary: r}\nmetrics: [a]\n", r"spec.yaml:\d+: not valid YAML"),
    ],
)
def test_spec_errors_name_file_and_key(tmp_path, text, match):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SstkitError, match=match):
        load_spec(path)


def test_spec_defaults_and_relative_paths(tmp_path):
    (tmp_path / "bench").mkdir()
    path = tmp_path / "bench" / "spec.yaml"
    path.write_text("runs: [{summary: ../runs}, {wandb: team/proj, filters: {state: finished}}]\nmetrics: [test/acc]\n")
    spec = load_spec(path)
    assert spec.sources[0].location == str((tmp_path / "runs").resolve())
    assert spec.sources[1].filters == {"state": "finished"}
    assert spec.title == "bench" and spec.seed_key == "seed_everything"
    assert spec.output == tmp_path.resolve() / "bench" / "results"
    assert spec.metrics[0].scale == 1.0 and spec.metrics[0].digits == 2
    with pytest.raises(SstkitError, match="table spec not found"):
        load_spec(tmp_path / "missing.yaml")


# --- the command ---------------------------------------------------------------------------------------------


SPEC = """\
title: SST-2 fine-tuning (MiniLM)
runs:
  - summary: runs
filters: {name: sst2_finetune}
rows:
  - {key: model.init_args.backbone, label: Backbone}
metrics:
  - {key: test/acc, label: "Test acc (%)", scale: 100, digits: 1}
  - {key: train_steps_per_s, label: steps/s}
expect_runs: 3
output: out/results
"""


def test_table_main_end_to_end(tmp_path, capsys, monkeypatch):
    for seed, acc in enumerate([0.84, 0.85, 0.86]):
        _write_summary(tmp_path / "runs", "sst2_finetune", seed, metrics={"test/acc": acc})
    _write_summary(tmp_path / "runs", "other", 0, metrics={"test/acc": 0.1})
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    monkeypatch.chdir(tmp_path)

    assert table_main([str(spec)]) == 0
    out = capsys.readouterr()
    assert "| minilm | 3 | 85.0 ± 1.0 | 2.50 ± 0.00 |" in out.out
    assert "wrote" in out.err
    md = (tmp_path / "out" / "results.md").read_text()
    assert md == out.out and md.startswith("## SST-2 fine-tuning (MiniLM)")
    assert "`sstkit table spec.yaml` from 3 of 4 runs" in md
    assert (tmp_path / "out" / "results.csv").read_text().splitlines()[0] == (
        "model.init_args.backbone,n,test/acc_mean,test/acc_std,train_steps_per_s_mean,train_steps_per_s_std"
    )

    assert table_main([str(spec), "--out", str(tmp_path / "elsewhere"), "--format", "csv"]) == 0
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["results.csv"]
    assert (tmp_path / "elsewhere" / "results.csv").read_text().splitlines()[1] == "minilm,3,0.85,0.01,2.5,0"
    capsys.readouterr()

    shutil.rmtree(tmp_path / "out")
    assert table_main([str(spec), "--print", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("model.init_args.backbone,n,")
    assert not (tmp_path / "out").exists()

    spec.write_text(SPEC.replace("name: sst2_finetune", "name: sst2_typo"))
    assert table_main([str(spec)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "filters" in err and "sst2_finetune" in err and "Traceback" not in err

    spec.write_text(SPEC.replace("digits: 1", "digits: one"))
    assert table_main([str(spec)]) == 2
    assert "metrics[0].digits: expected an integer" in capsys.readouterr().err


def test_table_main_reads_offline_wandb_runs(offline_runs, tmp_path, capsys):
    root, _ = offline_runs
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"runs: [{{wandb_offline: {root / 'wandb'}}}]\n"
        "rows: ['trainer.callbacks[SparseSpectralTraining].init_args.rank']\n"
        "metrics: [{key: test/acc, scale: 100}]\n"
    )
    assert table_main([str(spec), "--print"]) == 0
    md = capsys.readouterr().out
    mean = (0.80 + 0.82 + 0.90) / 3 * 100
    std = math.sqrt(sum((x * 100 - mean) ** 2 for x in (0.80, 0.82, 0.90)) / 2)
    assert f"| 8 | 3 | {mean:.2f} ± {std:.2f} |" in md
    assert "1 run failed: sst2 seed 2" in md


# --- keys and metrics that no run has ------------------------------------------------------------------------


def _three_runs():
    return [_run(seed, 0.8 + seed / 100, rank=8) for seed in range(3)]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        # A typo in a row key used to merge every arm into one row and drop repeats as "superseded".
        ({"rows": ["methd"]}, r"rows\[0\].key: no run of 3 has 'methd'.*top-level keys.*: seed_everything, model, "
                              r"trainer, name, id, status, seed"),
        ({"rows": ["model.init_args.backbon"]},
         r"did you mean 'model.init_args.backbone'\? The keys under model.init_args: backbone, lr$"),
        ({"rows": ["trainer.callbacks[SparseSpectral].init_args.rank"]},
         r"keys under trainer.callbacks: \[LearningRateMonitor\], \[SparseSpectralTraining\]"),
        ({"filters": {"model.init_args.lrr": 0.001}}, r"filters.model.init_args.lrr: .*'model.init_args.lr'"),
        ({"seed_key": "seed_everythin"}, r"seed_key: no run of 3 has 'seed_everythin'; did you mean 'seed_everything'"),
        ({"metrics": ["test/acc", "test/f1"]},
         r"metrics\[1\].key: no run of 3 has the metric 'test/f1'.* The runs have: test/acc\. .*optional: true"),
        ({"metrics": ["test/accuracy"]}, r"metrics\[0\].key: .*did you mean 'test/acc'\?"),
    ],
)
def test_keys_and_metrics_that_no_run_has_stop_the_table(tmp_path, overrides, match):
    with pytest.raises(SstkitError, match=match):
        build_table(_spec(tmp_path, **overrides), _three_runs())


def test_optional_metric_and_keys_some_runs_have(tmp_path):
    runs = _three_runs() + [_run(0, 0.5, backbone="bert")]  # only the minilm runs have the SST rank
    spec = _spec(tmp_path, rows=["trainer.callbacks[SparseSpectralTraining].init_args.rank"],
                 metrics=["test/acc", {"key": "test/f1", "optional": True}], seed_key="model.init_args.lr")
    table = build_table(spec, runs)
    assert [(row.values, row.n) for row in table.rows] == [([8], 1), ([MISSING], 1)]  # one lr: one kept per row
    assert "| 8 | 1* | 0.80 | – |" in render_markdown(table)
    with pytest.raises(SstkitError, match=r"metrics\[0\].optional: expected true or false, got 'yes'"):
        _spec(tmp_path, metrics=[{"key": "a", "optional": "yes"}])


def test_table_main_names_an_unknown_key_without_a_traceback(tmp_path, capsys):
    for seed in range(3):
        _write_summary(tmp_path / "runs", "sst2_finetune", seed, metrics={"test/acc": 0.8})
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.replace("model.init_args.backbone", "model.init_args.methd"))
    assert table_main([str(spec), "--print"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "rows[0].key: no run of 3 has 'model.init_args.methd'" in err and "backbone, lr" in err
    spec.write_text(SPEC.replace("train_steps_per_s", "train_step_per_s"))
    assert table_main([str(spec), "--print"]) == 2
    assert "did you mean 'train_steps_per_s'?" in capsys.readouterr().err


# --- damaged files and paths in notes ------------------------------------------------------------------------


def _csv_log(root: Path, seed: int, acc: float, lr: float = 0.01) -> Path:
    """A real Lightning CSVLogger folder (version_<n>/metrics.csv + hparams.yaml) of a run that logged val/acc."""
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(str(root), name="lightning_logs")
    logger.log_hyperparams({"lr": lr, "seed_everything": seed, "model": "mlp"})
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.log_metrics({"val/acc": acc, "epoch": 0}, step=1)
    logger.save()
    return Path(logger.log_dir)


def test_damaged_runs_become_notes_with_paths_relative_to_the_spec(offline_runs, tmp_path, capsys):
    root, ids = offline_runs
    # summary.json: three good runs without W&B ids (so their ids are run folders), one cut off, one failed.
    for seed in range(3):
        run_dir = _write_summary(tmp_path / "runs", "sst2_finetune", seed, metrics={"test/acc": 0.8 + seed / 100},
                                 wandb={})
    text = (run_dir / "summary.json").read_text()
    cut = _write_summary(tmp_path / "runs", "sst2_finetune", 3)
    (cut / "summary.json").write_text(text[: len(text) // 2])
    _write_summary(tmp_path / "runs", "sst2_finetune", 4, status="failed", wandb={})
    # offline W&B: a copy of the fixture's runs with one file cut off.
    shutil.copytree(root / "wandb", tmp_path / "wandb", ignore=shutil.ignore_patterns("*.log", "latest-run"))
    damaged = next((tmp_path / "wandb").glob(f"offline-run-*-{ids[1]}/run-{ids[1]}.wandb"))
    damaged.write_bytes(damaged.read_bytes()[:-5])
    # CSV: two good CSVLogger folders and one with its last row cut off.
    for seed in range(3):
        last = _csv_log(tmp_path / "logs", seed, 0.7 + seed / 100)
    csv_file = last / "metrics.csv"
    csv_file.write_text(csv_file.read_text()[:-4])

    spec = tmp_path / "bench" / "spec.yaml"
    spec.parent.mkdir()
    for source, rows, metric, expected in [
        ("summary: ../runs", "name", "test/acc", "1 run unreadable: ../runs/sst2_finetune/seed3/summary.json, "
                                                 "line 1: run summary is not valid JSON"),
        ("wandb_offline: ../wandb", "name", "test/acc", f"1 run unreadable: ../wandb/{damaged.parent.name}/"
                                                        f"{damaged.name}, truncated: ends inside a record at byte"),
        ("csv: ../logs", "model", "val/acc", "1 run unreadable: ../logs/lightning_logs/version_2/metrics.csv, "
                                             "line 3: truncated: the last line has no newline"),
    ]:
        kind, where = source.split(": ")
        absolute = f"{kind}: {(spec.parent / where).resolve()}" if kind == "csv" else source  # shown relative too
        spec.write_text(f"runs: [{{{absolute}}}]\nrows: [{rows}]\nmetrics: [{metric}]\n")
        assert table_main([str(spec), "--print"]) == 0, capsys.readouterr().err
        md = capsys.readouterr().out
        assert expected in md, md
        assert str(tmp_path) not in md, "generated tables name no absolute paths"
        assert f"({source})" in md  # the source as the spec names it, relative to the spec
        if source.startswith("summary"):
            assert "1 run failed: sst2_finetune seed 4 (../runs/sst2_finetune/seed4)" in md
            assert "| sst2_finetune | 3 | 0.81 ± 0.01 |" in md and "`sstkit table spec.yaml` from 4 runs" in md


def test_csv_logger_source(tmp_path):
    for seed, acc in enumerate([0.70, 0.72, 0.74]):
        _csv_log(tmp_path / "logs", seed, acc, lr=0.01)
    _csv_log(tmp_path / "logs", 0, 0.5, lr=0.1)
    spec = parse_spec({"runs": [{"csv": "logs"}], "rows": ["lr"], "metrics": ["val/acc", "train/loss", "step"]},
                      tmp_path / "spec.yaml")
    from sstkit.bench.command import read_runs

    # yaml.dump writes objects with Python tags; they read as plain values, not as an unreadable run.
    hparams = tmp_path / "logs" / "lightning_logs" / "version_1" / "hparams.yaml"
    hparams.write_text(hparams.read_text() + "mode: !!python/object/apply:builtins.str [fast]\n")
    runs = read_runs(spec)
    assert [(r.name, r.seed, r.status) for r in runs] == [("lightning_logs", s, "finished") for s in (0, 1, 2, 0)]
    assert runs[0].config == {"lr": 0.01, "seed_everything": 0, "model": "mlp"}
    assert runs[1].config["mode"] == ["fast"]
    table = build_table(spec, runs)
    assert [(row.values, row.n) for row in table.rows] == [([0.01], 3), ([0.1], 1)]
    assert table.rows[0].cells[0].mean == pytest.approx(0.72) and table.rows[0].cells[0].std == pytest.approx(0.02)
    assert table.rows[0].cells[1].mean == 1.0 and table.rows[0].cells[2].mean == 1.0


# --- W&B API: real wandb.apis.public.Run objects from server-shaped JSON --------------------------------------


class _GraphQLService:
    """Stands in for wandb's ServiceApi: answers the public API's GraphQL queries with server-shaped JSON."""

    app_url = "https://wandb.example/"
    heavy = ("config", "summaryMetrics", "systemMetrics")  # what wandb's lazy fragment leaves out

    def __init__(self, nodes):
        self.nodes, self.queries = nodes, []

    def _shape(self, node, query):
        lazy = "...LightweightRunFragment" in query
        return {k: v for k, v in node.items() if not (lazy and k in self.heavy)}

    def execute_graphql(self, query, variables=None, **kwargs):
        self.queries.append(query)
        if "query Runs(" in query:
            start, size = int(variables.get("cursor") or 0), variables["perPage"]
            page = self.nodes[start : start + size]
            edges = [{"node": self._shape(n, query), "cursor": str(start + i + 1)} for i, n in enumerate(page)]
            return {"project": {"internalId": "UHJvamVjdDox", "runCount": len(self.nodes), "readOnly": False,
                                "runs": {"edges": edges, "pageInfo": {"endCursor": str(start + len(page)),
                                                                      "hasNextPage": start + size < len(self.nodes)}}}}
        node = next(n for n in self.nodes if n["name"] == variables["name"])
        return {"project": {"run": self._shape(node, query)}}


class _PublicApi:
    """``wandb.Api().runs`` without a login: the same Runs paginator, over the stand-in service."""

    def __init__(self, service):
        self.service = service

    def runs(self, path, filters=None, order="+created_at", per_page=50, include_sweeps=False, lazy=True):
        from wandb.apis.public import Runs

        entity, project = path.split("/")
        return Runs(self.service, entity, project, filters=filters, order=order, per_page=per_page,
                    include_sweeps=include_sweeps, lazy=lazy)


def _server_run(i: int, state: str = "finished") -> dict:
    config = {"seed_everything": {"value": i % 3, "desc": None},
              "model": {"value": {"init_args": {"backbone": "minilm" if i % 2 else "bert"}}, "desc": None},
              "_wandb": {"value": {"cli_version": "0.31.0"}}}
    summary = {"test/acc": 0.5 + i / 1000, "global_step": 30, "wall_time_s": 10.0 + i, "_runtime": 11.5 + i,
               "_step": 3, "_wandb": {"runtime": 11}}
    return {"id": f"UnVuOnYx{i}", "name": f"run{i:03d}", "displayName": "sst2", "state": state, "projectId": "1",
            "config": json.dumps(config), "summaryMetrics": json.dumps(summary), "systemMetrics": "{}",
            "createdAt": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}", "group": None, "jobType": None, "tags": ["t"],
            "heartbeatAt": None, "description": None, "notes": None, "commit": None, "readOnly": False,
            "sweepName": None, "historyLineCount": 4, "historyKeys": None,
            "user": {"name": "Someone", "username": "someone"}}


@pytest.mark.parametrize("n_runs", [3, 120])
def test_wandb_api_reader_with_real_public_api_runs(tmp_path, monkeypatch, n_runs):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))  # wandb's Run makes a scratch folder per run there
    nodes = [_server_run(i, "killed" if i == 1 else "finished") for i in range(n_runs)]
    service = _GraphQLService(nodes)
    runs = read_wandb_api("team/proj", filters={"state": "finished"}, api=_PublicApi(service))
    # One request per page of 50: configs and summaries come with the list, not one more request per run.
    assert len(service.queries) == math.ceil(n_runs / 50)
    assert all("query Runs(" in q for q in service.queries)
    assert [r.id for r in runs] == [f"run{i:03d}" for i in range(n_runs)]
    first, killed = runs[0], runs[1]
    assert (first.name, first.seed, first.status, killed.status) == ("sst2", 0, "finished", "failed")
    assert first.config == {"seed_everything": 0, "model": {"init_args": {"backbone": "bert"}}}
    assert first.metrics == {"test/acc": 0.5, "global_step": 30.0, "wall_time_s": 10.0, "_runtime": 11.5,
                             "_step": 3.0}
    assert first.source == "https://wandb.example/team/proj/runs/run000"
    assert first.extra["started"] == "2026-01-01T00:00:00"
    spec = parse_spec({"runs": [{"wandb": "team/proj"}], "rows": ["model.init_args.backbone"],
                      "metrics": ["test/acc"]}, tmp_path / "spec.yaml")
    table = build_table(spec, runs)
    # 2 backbones x 3 seeds: 3 runs leave bert seeds 0 and 2 (the killed minilm run is noted); 120 fill all six.
    assert sum(row.n for row in table.rows) == (2 if n_runs == 3 else 6)
    assert ("1 run failed: sst2 seed 1 (run001)" in table.notes) == (n_runs == 3)


# --- the same sstkit runs from summary.json, offline W&B and CSV logs ----------------------------------------


@pytest.fixture(scope="module")
def sstkit_runs(tmp_path_factory, data_dir):
    """Real `sstkit fit` runs of a tiny BERT in offline W&B mode: seeds 0 and 1, and a `test` segment of seed 0."""
    import yaml
    from conftest import tiny_config
    from support import run_cli

    root = tmp_path_factory.mktemp("sstkit_runs")
    runs = root / "runs"
    for seed in (0, 1):
        config = tiny_config(data_dir, max_steps=2, val_check_interval=2, limit_val_batches=2, limit_test_batches=2)
        config["seed_everything"] = seed
        (root / f"config{seed}.yaml").write_text(yaml.safe_dump(config))
        run_cli("fit", "--config", str(root / f"config{seed}.yaml"), "--name", "parity", "--run_root", str(runs))
    ckpt = runs / "parity" / "seed0" / "checkpoints" / "last.ckpt"
    run_cli("test", "--config", str(root / "config0.yaml"), "--name", "parity", "--run_root", str(runs),
            "--ckpt_path", str(ckpt))
    return runs


RUN_STATISTICS = {"global_step", "epochs", "train_time_s", "train_steps_per_s", "train_samples_per_s", "wall_time_s"}


def _table_from(source: str, location: Path, metrics: list[str], tmp_path: Path):
    spec = parse_spec({"runs": [{source: str(location)}], "rows": ["seed_everything"], "metrics": metrics},
                      tmp_path / "spec.yaml")
    from sstkit.bench.command import read_runs

    return build_table(spec, read_runs(spec))


def test_summary_json_and_offline_wandb_give_the_same_table(sstkit_runs, tmp_path):
    summaries = read_summaries(sstkit_runs)
    metrics = sorted({m for run in summaries for m in run.metrics})
    assert RUN_STATISTICS | {"val/acc", "test/acc", "train/loss"} <= set(metrics)
    from_summary = _table_from("summary", sstkit_runs, metrics, tmp_path)
    from_wandb = _table_from("wandb_offline", sstkit_runs, metrics, tmp_path)
    # Every cell, to 12 significant digits: the run statistics reach W&B under the same names and meaning.
    assert render_csv(from_wandb) == render_csv(from_summary)
    assert [[c.values for c in row.cells] for row in from_wandb.rows] == [
        [c.values for c in row.cells] for row in from_summary.rows
    ]
    assert [row.n for row in from_summary.rows] == [1, 1] and from_wandb.notes == from_summary.notes
    # wall_time_s is the sum of the segments' wall times (fit + test for seed 0), not W&B's own _runtime.
    seed0 = next(r for r in summaries if r.seed == 0)
    segments = seed0.extra["segments"]
    assert [s["command"] for s in segments] == ["fit", "test"]
    assert seed0.metrics["wall_time_s"] == pytest.approx(sum(s["wall_s"] for s in segments), abs=2e-3)


def test_sstkit_csv_logs_are_a_source(sstkit_runs, tmp_path):
    from_csv = _table_from("csv", sstkit_runs, ["val/acc", "test/acc"], tmp_path)
    from_summary = _table_from("summary", sstkit_runs, ["val/acc", "test/acc"], tmp_path)
    assert [(row.values, row.n) for row in from_csv.rows] == [([0], 1), ([1], 1)]
    assert from_csv.rows[0].runs[0].name == "parity" and len(from_csv.rows[0].runs[0].extra["folders"]) == 2
    assert render_csv(from_csv) == render_csv(from_summary)  # fit and test segments of seed 0 merge into one run


# --- benchmarks/RESULTS.md -----------------------------------------------------------------------------------


def _collect_results_module():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "collect_results.py"
    spec = importlib.util.spec_from_file_location("collect_results", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_collect_results_finds_nested_tables(tmp_path):
    collect_results = _collect_results_module()
    bench = tmp_path / "backdoor"
    for rel in ("README.md", "results.md", "cost.md", "detect/results.md", "sweep/results.md",
                "sweep/exposure/results.md", "runs/x/seed0/results.md", "sweep/exposure/notes.md"):
        (bench / rel).parent.mkdir(parents=True, exist_ok=True)
        (bench / rel).write_text(f"## table {rel}\n\n| a |\n")
    text = collect_results.collect(tmp_path)
    assert [line for line in text.splitlines() if line.startswith("#")] == [
        "# Benchmark results", "## [backdoor](backdoor/README.md)", "### results", "## table results.md", "### cost",
        "## table cost.md", "### detect", "## table detect/results.md", "### sweep", "## table sweep/results.md",
        "### sweep/exposure", "## table sweep/exposure/results.md",
    ]
    # The repository's own nested tables (backdoor/sweep/exposure/results.md among them) are all collected.
    benchmarks = Path(collect_results.__file__).parent
    for table in benchmarks.glob("*/*/**/results.md"):
        folder = benchmarks / table.relative_to(benchmarks).parts[0]
        if "runs" not in table.parts and (folder / "README.md").is_file():
            assert table in collect_results.tables(folder), table
