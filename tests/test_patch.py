"""PortLLM patches: extract → apply reproduces the LoRA model; a mismatched base fails cleanly; commands."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_BERT

from sstkit.cli import main
from sstkit.commands.classifier_io import load_classifier
from sstkit.commands.patch import patch_main
from sstkit.errors import SstkitError
from sstkit.functional.lora import apply_lora
from sstkit.functional.patch import apply_patch, architecture_of, extract_patch, load_patch, save_patch
from sstkit.loaders import load_encoder, load_tokenizer
from sstkit.models.text_classifier import TextClassifier

IDS = torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 2204, 3185, 102, 0, 0]])
MASK = (IDS != 0).long()


@pytest.fixture(scope="module")
def lora_setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny base folder, and a classifier on it with trained-looking LoRA adapters (B ≠ 0) and head."""
    root = tmp_path_factory.mktemp("patch")
    torch.manual_seed(0)
    load_encoder("minilm", pretrained=False, config_overrides=TINY_BERT).save_pretrained(str(root / "base"))
    load_tokenizer("minilm").save_pretrained(str(root / "base"))
    model = TextClassifier(backbone=str(root / "base"), num_labels=2).eval()
    base_model = copy.deepcopy(model)
    layers = apply_lora(model, 4, 8.0, ["re:(query|value|dense)$"])
    with torch.no_grad():
        for layer in layers.values():
            layer.lora_B["default"].weight.normal_(0, 0.2)
        model.head[1].weight.normal_(0, 1.0)
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)},
               run / "checkpoints" / "last.ckpt")
    config = {"trainer": {"callbacks": [{"class_path": "sstkit.callbacks.LoRA", "init_args": {"alpha": 8.0}}]}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return {"root": root, "model": model, "base_model": base_model, "ckpt": run / "checkpoints" / "last.ckpt"}


def test_extract_apply_on_same_base_reproduces_outputs(lora_setup: dict, tmp_path: Path) -> None:
    model, base = lora_setup["model"], copy.deepcopy(lora_setup["base_model"])
    patch = extract_patch(model, architecture_of(model.encoder), strip_prefix="encoder.")
    assert patch.manifest["alpha"] == 8.0 and patch.manifest["r"] == 4 and patch.saved
    save_patch(patch, tmp_path / "p")
    loaded = load_patch(tmp_path / "p")
    assert set(loaded.deltas) == set(patch.deltas)
    apply_patch(base.encoder, loaded, root=base)
    with torch.no_grad():
        torch.testing.assert_close(base(IDS, MASK), model(IDS, MASK), rtol=1e-5, atol=1e-5)
    # The state-dict route (α given) yields the same updates as the module route.
    from_state = extract_patch(model.state_dict(), architecture_of(model.encoder), strip_prefix="encoder.", alpha=8.0)
    for key, value in patch.deltas.items():
        torch.testing.assert_close(from_state.deltas[key], value)


def test_mismatched_architecture_fails_cleanly(lora_setup: dict, tmp_path: Path) -> None:
    model = lora_setup["model"]
    patch = extract_patch(model, architecture_of(model.encoder), strip_prefix="encoder.")
    other = TextClassifier(backbone="minilm", pretrained=False, num_labels=2,
                           config_overrides={**TINY_BERT, "hidden_size": 48})
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(SstkitError, match="hidden_size"):
        apply_patch(other.encoder, patch, root=other)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())  # nothing changed
    with pytest.raises(SstkitError, match="no LoRA"):
        extract_patch(other, architecture_of(other.encoder))


def test_patch_commands_end_to_end(lora_setup: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = lora_setup["root"]
    assert patch_main(["extract", "--finetuned", str(lora_setup["ckpt"]), "--out", str(tmp_path / "patch")]) == 0
    assert load_patch(tmp_path / "patch").manifest["alpha"] == 8.0  # read from the run's config.yaml
    assert patch_main(["apply", "--base", str(root / "base"), "--patch", str(tmp_path / "patch"),
                       "--out", str(tmp_path / "out")]) == 0
    patched = load_classifier(tmp_path / "out")
    with torch.no_grad():
        torch.testing.assert_close(patched(IDS, MASK), lora_setup["model"](IDS, MASK), rtol=1e-5, atol=1e-5)
    # A mismatched base through the console entry point: one line, exit code 2 (the check runs before loading).
    other = tmp_path / "other"
    load_encoder("minilm", pretrained=False, config_overrides={**TINY_BERT, "num_hidden_layers": 2}).save_pretrained(
        str(other))
    with pytest.raises(SystemExit) as exit_info:
        main(["patch", "apply", "--base", str(other), "--patch", str(tmp_path / "patch"), "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: PortLLM") and "num_hidden_layers" in err[-1]
    assert not (tmp_path / "x").exists()
