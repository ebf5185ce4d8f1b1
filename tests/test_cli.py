"""The command line: every shipped config parses, bad input gives one clear message, subcommands dispatch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO, tiny_config
from support import run_cli, run_sstkit

from sstkit.cli import main
from sstkit.config_errors import PRESET_MARK


def is_preset(path: Path) -> bool:
    """A preset says in its first line that it is merged onto a base config (and how)."""
    return path.read_text().startswith(PRESET_MARK)


def is_trainer_config(path: Path) -> bool:
    """A config of LightningCLI's subcommands (others, e.g. ``sstkit llm2llm``'s, are tested by their command)."""
    words = path.read_text().split("\n", 1)[0].split()
    return len(words) < 3 or words[2] in ("fit", "validate", "test", "predict")


# Every shipped config: run alone, or, for presets, merged onto the base config of their launch command.
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if not is_preset(p) and is_trainer_config(p))
PRESETS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if is_preset(p))


def test_configs_exist() -> None:
    assert CONFIGS and PRESETS


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_config_prints(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = config.read_text().splitlines()[0]
    assert first.startswith("# ") and "--config" in first, f"{config} must begin with its launch command"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "class_path" in capsys.readouterr().out


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_trainer_presets_merge(preset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configs = re.findall(r"--config (\S+)", preset.read_text().splitlines()[0])
    assert str(preset.relative_to(REPO)) in configs, f"{preset}'s first line must be the command that merges it"
    assert any(not is_preset(REPO / c) for c in configs), f"{preset}'s command must merge it onto a base config"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *(arg for c in configs for arg in ("--config", str(REPO / c))), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "trainer:" in capsys.readouterr().out


def test_preset_alone_says_it_is_a_preset(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # a relative path, as typed (jsonargparse changes directory while parsing a file)
    preset = "configs/base/trainer_debug.yaml"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(preset), "--print_config"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{preset}:13: unknown key data.init_args.limit_train_samples" in err
    assert "is a preset, to merge onto a base config: sstkit fit --config" in err
    assert "usage:" not in err


def test_overrides_and_callbacks_append(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(REPO / "configs/bert/sst2/finetune.yaml"), "--model.init_args.lr", "0.001",
              "--trainer.callbacks+=LearningRateMonitor", "--print_config"])
    out = capsys.readouterr().out
    assert "lr: 0.001" in out and "LearningRateMonitor" in out


def test_typo_key_exits_cleanly(write_config, data_dir: Path) -> None:
    config = tiny_config(data_dir)
    config["model"]["init_args"]["learning_rat"] = 0.1
    result = run_sstkit("fit", "--config", str(write_config(config)))
    assert result.returncode != 0
    assert "learning_rat" in result.stderr and "Traceback" not in result.stderr
    assert "unknown key model.init_args.learning_rat" in result.stderr and "usage:" not in result.stderr


def test_missing_data_dir_exits_cleanly(tmp_path: Path) -> None:
    result = run_sstkit("fit", "--config", str(REPO / "configs/bert/sst2/finetune.yaml"),
                        "--data.init_args.data_dir", "/nonexistent", "--run_root", str(tmp_path))
    assert result.returncode == 2
    assert "/nonexistent/sst2" in result.stderr and "SSTKIT_DATA" in result.stderr
    assert "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir()), "a failed start must not create run folders"


def test_missing_checkpoint_exits_cleanly(write_config, data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["test", "--config", str(write_config(tiny_config(data_dir))), "--ckpt_path", str(tmp_path / "no.ckpt"),
              "--run_root", str(tmp_path / "runs")])
    assert exit_info.value.code == 2


def test_python_m_and_table_dispatch() -> None:
    result = run_sstkit("--help")
    assert result.returncode == 0 and "table" in result.stdout
    result = run_sstkit("table", "--help")
    assert result.returncode == 0 and "spec" in result.stdout.lower()


def test_bad_value_in_init_is_one_line(write_config, data_dir: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    config = tiny_config(data_dir)
    config["model"]["init_args"]["pooling"] = "max"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(write_config(config)), "--run_root", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "pooling" in capsys.readouterr().err


def test_in_process_run_returns_trainer(write_config, data_dir: Path, tmp_path: Path) -> None:
    cli = run_cli("fit", "--config", str(write_config(tiny_config(data_dir, max_steps=2))), "--run_root", str(tmp_path))
    assert cli.trainer.global_step == 2
