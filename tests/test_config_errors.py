"""Config and command-line errors: one or two lines naming the file and line (or option), the key and what was
expected, with the closest accepted key suggested; exit code 2, no usage block, no Union dump, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from sstkit.cli import main

BASE = str(REPO / "configs/bert/sst2/finetune.yaml")


def error_of(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Runs the CLI in-process and returns its stderr, checking the exit code and the shape of the message."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error: ") and len(lines) <= 2, err
    for noise in ("usage:", "Union", "Subtypes", "Given value", "Traceback", "tip:"):
        assert noise not in err, err
    return err


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


MODEL_AND_DATA = """\
model:
  class_path: sstkit.models.TextClassifier
  init_args:
    backbone: minilm
    {model_key}: 0.1
data:
  class_path: sstkit.datamodules.SST2DataModule
  init_args:
    {data_key}: 8
"""


def test_typo_inside_model_names_file_line_and_closest_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path, MODEL_AND_DATA.format(model_key="lrr", data_key="batch_size"))
    err = error_of(["fit", "--config", str(config), "--print_config"], capsys)
    assert f"{config}:5: unknown key model.init_args.lrr (did you mean 'lr'?)" in err
    assert "accepted keys of sstkit.models.TextClassifier: backbone" in err and "warmup_ratio" in err


def test_typo_inside_data_names_file_line_and_closest_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path, MODEL_AND_DATA.format(model_key="lr", data_key="batch_siz"))
    err = error_of(["fit", "--config", str(config), "--print_config"], capsys)
    assert f"{config}:9: unknown key data.init_args.batch_siz (did you mean 'batch_size'?)" in err
    assert "limit_train_samples" in err


def test_wrong_type_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    err = error_of(["fit", "--config", BASE, "--model.init_args.lr", "abc", "--print_config"], capsys)
    assert "error: --model.init_args.lr: expected float, got 'abc'" in err


def test_wrong_type_in_a_file_and_literal_choices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path, MODEL_AND_DATA.format(model_key="lr", data_key="batch_size").replace("8", "eight"))
    err = error_of(["fit", "--config", str(config), "--print_config"], capsys)
    assert f"{config}:9: data.init_args.batch_size: expected int, got 'eight'" in err
    err = error_of(["fit", "--config", BASE, "--trainer.precision", "33", "--print_config"], capsys)
    assert "--trainer.precision: expected one of" in err and "'bf16-mixed'" in err and "got '33'" in err


def test_unknown_class_path_suggests_the_closest_class(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path, "model:\n  class_path: sstkit.models.TextClasifier\n")
    err = error_of(["fit", "--config", str(config), "--print_config"], capsys)
    assert (f"{config}:1: model: no class 'sstkit.models.TextClasifier' "
            "(did you mean 'sstkit.models.TextClassifier'?)") in err
    err = error_of(["fit", "--config", BASE, "--optimizer", "Adamm", "--print_config"], capsys)
    assert "--optimizer: no class 'Adamm' (did you mean 'Adam'?)" in err


def test_unknown_top_level_and_trainer_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path, "trainr:\n  max_steps: 3\n")
    err = error_of(["fit", "--config", BASE, "--config", str(config), "--print_config"], capsys)
    assert f"{config}:2: unknown key trainr.max_steps (did you mean 'trainer'?)" in err
    assert "accepted keys of the top level:" in err and "seed_everything" in err
    err = error_of(["fit", "--config", BASE, "--trainer.max_stepz", "3", "--print_config"], capsys)
    assert "unknown option --trainer.max_stepz (did you mean 'max_steps'?)" in err


def test_typo_inside_a_callback_list_item(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path, "trainer:\n  callbacks:\n    - class_path: sstkit.callbacks.LoRA\n      init_args:\n"
                             "        rankk: 4\n")
    err = error_of(["fit", "--config", BASE, "--config", str(config), "--print_config"], capsys)
    assert f"{config}:5: unknown key trainer.callbacks.init_args.rankk (did you mean 'rank'?)" in err
    assert "accepted keys of sstkit.callbacks.LoRA: rank, alpha" in err


def test_invalid_yaml_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path, "model:\n  init_args: {lr: 1\ndata: x\n")
    err = error_of(["fit", "--config", str(config), "--print_config"], capsys)
    assert f"{config}:3: invalid YAML" in err
    err = error_of(["fit", "--config", str(tmp_path / "nope.yaml")], capsys)
    assert "--config: file not found:" in err and "nope.yaml" in err


def test_unknown_command_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    err = error_of(["fitt"], capsys)
    assert "unknown command 'fitt' (did you mean 'fit'?)" in err
    assert all(name in err for name in ("table", "delta", "patch", "quantize", "backdoor", "data"))


def test_help_usage_lists_every_subcommand_under_python_m() -> None:
    result = subprocess.run([sys.executable, "-m", "sstkit", "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0
    usage = result.stdout.splitlines()[0]
    assert usage.startswith("usage: sstkit "), usage
    for name in ("fit", "validate", "test", "predict", "table", "delta", "patch", "quantize", "backdoor", "data"):
        assert name in usage, usage


def test_trainer_misconfiguration_is_one_line(write_config, data_dir: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import tiny_config

    config = write_config(tiny_config(data_dir))
    err = error_of(["fit", "--config", str(config), "--trainer.devices", "0", "--run_root", str(tmp_path)], capsys)
    assert err.startswith("error: trainer: ") and "devices='0'" in err
