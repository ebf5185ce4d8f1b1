"""Import rules: functional cores load without Lightning, the CLI's help starts light, and layers stay layered.

Fresh interpreters (subprocesses) are used where the question is "what does importing X load", since this pytest
process has imported everything long ago.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

HEAVY = ("lightning", "pytorch_lightning")
LIGHT_PACKAGES = ("sstkit.functional", "sstkit.nn", "sstkit.optim")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def functional_modules() -> list[str]:
    """Every module of ``sstkit.functional`` (subpackages included), then the light packages themselves."""
    files = sorted((REPO / "sstkit" / "functional").rglob("*.py"))
    return [_module_name(p) for p in files] + list(LIGHT_PACKAGES)


def fresh_import(modules: list[str]) -> dict[str, list[str]]:
    """Imports ``modules`` one after the other in a new interpreter; for each, the watched modules then loaded.

    Imports only add to ``sys.modules``, so a heavy module absent after the last import was pulled in by none of
    them; recording after each import names the first culprit when one is present.
    """
    watched = list(HEAVY) + ["sstkit.models", "sstkit.datamodules", "sstkit.callbacks", "sstkit.cli"]
    code = (
        "import importlib, json, sys\n"
        f"watched = {watched!r}\n"
        "seen = {}\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    seen[name] = [w for w in watched if w in sys.modules]\n"
        "print(json.dumps(seen))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_functional_cores_import_without_lightning_or_model_code() -> None:
    seen = fresh_import(functional_modules())
    loaded = {name: heavy for name, heavy in seen.items() if heavy}
    assert not loaded, f"first import that loads Lightning or model/data/callback code: {next(iter(loaded.items()))}"


def test_short_names_stay_available_lazily() -> None:
    seen = fresh_import(["sstkit"])
    assert seen["sstkit"] == [], "import sstkit must not load Lightning or the model families"
    import sstkit.datamodules

    import sstkit
    import sstkit.models

    assert set(sstkit._LAZY_NAMES) == set(sstkit.models.__all__) | set(sstkit.datamodules.__all__)
    assert sstkit.TextClassifier is sstkit.models.TextClassifier
    assert sstkit.SST2DataModule is sstkit.datamodules.SST2DataModule
    assert "TextClassifier" in dir(sstkit) and "callbacks" in dir(sstkit)
    with pytest.raises(AttributeError, match="NoSuchThing"):
        _ = sstkit.NoSuchThing


def _cli_modules(argv: list[str]) -> tuple[str, list[str]]:
    code = (
        "import json, sys\n"
        "from sstkit.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exit:\n"
        "    assert exit.code in (0, None), exit.code\n"
        f"print(json.dumps([m for m in {list(HEAVY) + ['sstkit.models', 'sstkit.datamodules']!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    return "\n".join(lines[:-1]), json.loads(lines[-1])


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["table", "--help"]])
def test_help_does_not_load_lightning(argv: list[str]) -> None:
    text, loaded = _cli_modules(argv)
    assert loaded == [], f"sstkit {' '.join(argv)} loaded {loaded}"
    assert "usage:" in text


def test_top_level_help_lists_every_command() -> None:
    from sstkit.cli import COMMANDS

    text, _ = _cli_modules(["--help"])
    for name in COMMANDS:
        assert f"  {name} " in text, f"sstkit --help does not list {name}"


def test_every_command_target_imports() -> None:
    import importlib

    from sstkit.cli import COMMANDS

    for name, command in COMMANDS.items():
        if command.target is not None:
            module, function = command.target.split(":")
            assert callable(getattr(importlib.import_module(module), function)), f"sstkit {name}: {command.target}"


def test_no_command_prints_usage_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    from sstkit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("usage: sstkit {fit,")


def test_short_class_names_resolve_in_a_fresh_cli(tmp_path: Path) -> None:
    config = tmp_path / "short.yaml"
    config.write_text(
        "model: {class_path: TextClassifier, init_args: {backbone: minilm, pretrained: false}}\n"
        "data: {class_path: SST2DataModule}\n"
        "optimizer: {class_path: AdamR, init_args: {lr: 0.001}}\n"
        "trainer: {callbacks: [{class_path: SparseSpectralTraining, init_args: {rank: 4}}]}\n"
    )
    text, _ = _cli_modules(["fit", "--config", str(config), "--print_config"])
    # jsonargparse prints the shortest import path, which for the model and data classes is ``sstkit.<Name>``.
    for name in ("TextClassifier", "SST2DataModule", "AdamR", "SparseSpectralTraining"):
        assert re.search(rf"class_path: sstkit\.(\w+\.)?{name}\n", text), f"{name} did not resolve:\n{text}"


# --- layering, by reading the import statements (deferred ones inside functions included) -----------------------
RULES: list[tuple[str, tuple[str, ...]]] = [
    # (files, module prefixes they must not import)
    ("datamodules/**/*.py", ("sstkit.models", "sstkit.callbacks", "sstkit.cli", "sstkit.commands")),
    ("sstkit/nn/**/*.py", ("sstkit.functional", "sstkit.models", "sstkit.callbacks", "sstkit.datamodules",
                           "sstkit.cli", "lightning", "pytorch_lightning")),
    ("sstkit/functional/**/*.py", ("sstkit.models", "sstkit.callbacks", "sstkit.datamodules", "sstkit.cli",
                                   "sstkit.commands", "lightning", "pytorch_lightning")),
    ("sstkit/optim/**/*.py", ("sstkit.models", "sstkit.callbacks", "sstkit.datamodules", "sstkit.cli",
                              "lightning", "pytorch_lightning")),
    ("sstkit/loaders.py", ("sstkit.models", "sstkit.datamodules", "sstkit.callbacks", "lightning")),
    ("sstkit/generation/**/*.py", ("sstkit.models", "sstkit.callbacks", "sstkit.datamodules", "sstkit.cli",
                                   "sstkit.commands", "lightning", "pytorch_lightning")),
]


def package_of(path: Path) -> str:
    """The package a file's relative imports start from (``datamodules/`` installs as ``sstkit.datamodules``)."""
    name = _module_name(path)
    if name.split(".")[0] in ("datamodules", "callbacks"):
        name = "sstkit." + name
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imported_modules(source: str, package: str) -> set[str]:
    """Absolute names of every module ``source`` imports, at top level or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("pattern,forbidden", RULES, ids=[r[0] for r in RULES])
def test_layers_do_not_import_upwards(pattern: str, forbidden: tuple[str, ...]) -> None:
    files = sorted(REPO.glob(pattern))
    assert files, f"no files match {pattern}"
    bad = [f"{p.relative_to(REPO)} imports {m}" for p in files
           for m in sorted(imported_modules(p.read_text(encoding="utf-8"), package_of(p)))
           if any(m == f or m.startswith(f + ".") for f in forbidden)]
    assert not bad, "layering broken:\n" + "\n".join(bad)


def test_import_scanner_sees_relative_and_deferred_imports() -> None:
    source = "from .text_files import read\ndef f():\n    from ..models import backbones\n    import lightning.pytorch\n"
    names = imported_modules(source, "sstkit.datamodules")
    assert {"sstkit.datamodules.text_files", "sstkit.models.backbones", "lightning.pytorch"} <= names
    assert package_of(REPO / "datamodules" / "sst2.py") == "sstkit.datamodules"
    assert package_of(REPO / "sstkit" / "nn" / "point" / "__init__.py") == "sstkit.nn.point"
