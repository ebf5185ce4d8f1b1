"""One-line messages for config and command-line errors, instead of jsonargparse's usage block and Union dump.

jsonargparse reports a bad key or value by ``ArgumentParser.error(message)``, which prints the whole usage and a
multi-line message such as ``Parser key "model": Does not validate against any of the Union subtypes …``.
:class:`SstkitArgumentParser` (the CLI's ``parser_class``) overrides ``error``: it reads the key, the value and
the expected type out of that message, looks the key up in the config files (their YAML line) or on the command
line, and prints one or two lines::

    error: cfg.yaml:6: unknown key model.init_args.lrr (did you mean 'lr'?)
      accepted keys of sstkit.models.TextClassifier: backbone, pretrained, lr, …

``JSONARGPARSE_DEBUG=1`` restores jsonargparse's own report.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.cli import LightningArgumentParser

MAX_LISTED = 15  # longer lists of accepted keys show only the nearest ones
BASE_CLASSES = ("LightningDataModule", "SstkitModule", "LightningModule")  # what an unset class_path resolves to
PRESET_MARK = "# Preset"  # first line of a config meant to be merged onto a base config

# Where a bare class name (``--model TextClasifier``) is looked for when suggesting the closest one.
CLASS_MODULES = {"model": ["sstkit.models"], "data": ["sstkit.datamodules"],
                 "trainer.callbacks": ["sstkit.callbacks", "lightning.pytorch.callbacks"],
                 "optimizer": ["torch.optim"], "lr_scheduler": ["torch.optim.lr_scheduler"]}


@dataclass
class Problem:
    """What went wrong: ``kind`` is ``unknown_key``, ``type``, ``class``, ``file``, ``command`` or ``other``."""

    kind: str
    key: str = ""
    value: str = ""
    expected: str = ""
    class_path: str = ""  # the class whose arguments ``key`` belongs to


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix and key else prefix or key


def _short_type(text: str) -> str:
    return re.sub(r"<class '(?:[\w.]*\.)?(\w+)'>", r"\1", text).strip()


def parse_message(message: str, prefix: str = "", class_path: str = "") -> Problem:
    """Reads a jsonargparse error message into a :class:`Problem` (recursing into a subclass's own error)."""
    message = message.strip()
    if m := re.match(r'Parser key "([^"]+)":\s*(.*)', message, re.S):
        key, rest = _join(prefix, m.group(1)), m.group(2)
        if inner := re.search(r"Problem with given class_path '([^']+)':\n(.*?)(?:\n\s*- Expected a <class 'NoneType'>|\Z)",
                              rest, re.S):
            return parse_message(_dedent(inner.group(2)), _join(key, "init_args"), inner.group(1))
        if t := re.search(r"Expected a (.+?)\. Got value: (.*)", rest):
            return Problem("type", key, t.group(2).strip(), _short_type(t.group(1)), class_path)
        if c := re.search(r"Expected a dot import path string: (\S+)|Expected a path but (\S+) either not accessible", rest):
            return Problem("class", key, c.group(1) or c.group(2))
        if "Union subtypes" in rest and (value := re.search(r"Given value: (.*)", rest)):
            return Problem("type", key, value.group(1).strip(), _union_expected(rest), class_path)
        if f := re.search(r"File does not exist: '([^']+)'", rest):
            return Problem("file", key, f.group(1))
        return Problem("other", key, expected=_first_error_line(rest), class_path=class_path)
    if m := re.search(r"module '([\w.]+)' has no attribute '(\w+)'", message):
        return Problem("class", prefix.removesuffix(".init_args"), f"{m.group(1)}.{m.group(2)}")
    if m := re.match(r"No module named '([\w.]+)'", message):
        return Problem("class", prefix.removesuffix(".init_args"), m.group(1))
    if m := re.match(r"Option '([^']+)' is not accepted", message):
        return Problem("unknown_key", _join(prefix, m.group(1)), class_path=class_path)
    if m := re.match(r"Group '([^']+)' does not accept option '([^']+)'", message):
        return Problem("unknown_key", _join(prefix, f"{m.group(1)}.{m.group(2)}"), class_path=class_path)
    if m := re.match(r"unrecognized arguments: --([^\s=]+)(?:[\s=](\S+))?", message):
        return Problem("unknown_key", _join(prefix, m.group(1)), m.group(2) or "", class_path=class_path)
    if m := re.search(r"invalid choice: '([^']*)'", message):
        return Problem("command", value=m.group(1))
    return Problem("other", prefix, expected=_first_error_line(message), class_path=class_path)


def _union_expected(text: str) -> str:
    """``one of 64, 32, '16-mixed', …`` from the per-subtype lines of a Union error."""
    options: list[str] = []
    for expected in re.findall(r"- Expected a (.+)", text):
        if "NoneType" in expected:
            continue
        literal = re.fullmatch(r"typing\.Literal\[(.*)\]", expected.strip())
        items = literal.group(1).split(", ") if literal else [_short_type(expected)]
        options += [item for item in items if item not in options]
    return "one of " + ", ".join(options) if options else "another type"


def _dedent(text: str) -> str:
    lines = text.splitlines()
    indent = min((len(line) - len(line.lstrip()) for line in lines if line.strip()), default=0)
    return "\n".join(line[indent:] for line in lines)


def _first_error_line(text: str) -> str:
    """The informative line of a message (skipping jsonargparse's Union / Subtypes / Given value boilerplate)."""
    noise = ("Does not validate", "Subtypes:", "Errors:", "Given value", "- Expected a <class 'NoneType'>")
    for line in text.splitlines():
        line = line.strip().lstrip("- ").strip()
        if line and not line.startswith(noise):
            return line
    return text.strip().splitlines()[0] if text.strip() else "invalid value"


# --- where the key was given ------------------------------------------------------------------------------
def config_files(argv: list[str]) -> list[Path]:
    """The ``--config`` / ``-c`` files of an argument list, in order."""
    files = []
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            files.append(Path(argv[i + 1]))
        elif arg.startswith("--config="):
            files.append(Path(arg.split("=", 1)[1]))
    return files


def read_config(path: Path) -> str:
    """A config file's text; a relative path is taken from where parsing started (jsonargparse changes the
    working directory to a config file's folder while it parses that file)."""
    return (Path(SstkitArgumentParser.start_dir) / path).read_text(encoding="utf-8")


def yaml_line(path: Path, keys: list[str]) -> int | None:
    """The 1-based line of the nested mapping key ``keys`` in a YAML file, or None.

    A list on the way (``trainer.callbacks``) is searched item by item, as jsonargparse names the key without
    the item's index.
    """
    try:
        node = yaml.compose(read_config(path))
    except (OSError, yaml.YAMLError):
        return None
    return _node_line(node, keys)


def _node_line(node: yaml.Node | None, keys: list[str]) -> int | None:
    if not keys:
        return None
    if isinstance(node, yaml.SequenceNode):
        return next((line for item in node.value if (line := _node_line(item, keys)) is not None), None)
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, value in node.value:
        if getattr(key_node, "value", None) == keys[0]:
            return key_node.start_mark.line + 1 if len(keys) == 1 else _node_line(value, keys[1:])
    return None


def locate(key: str, argv: list[str]) -> tuple[str, str]:
    """Where ``key`` was set: ``("option", "--a.b")`` on the command line (which wins over config files), else
    ``("file", "path:line")`` in the last config file that sets it, else ``("", "")``."""
    short = key.replace(".init_args.", ".")
    for arg in reversed(argv):
        name = arg.split("=", 1)[0].removesuffix("+")  # `--trainer.callbacks+=X` appends
        if name in (f"--{key}", f"--{short}"):
            return "option", name
    for path in reversed(config_files(argv)):
        for keys in (key.split("."), short.split(".")):
            line = yaml_line(path, keys)
            if line is not None:
                return "file", f"{path}:{line}"
    return "", ""


def preset_note(argv: list[str]) -> str:
    """A note when the config files given are all presets, which are meant to be merged onto a base config."""
    firsts = []
    for path in config_files(argv):
        try:
            firsts.append((path, read_config(path).partition("\n")[0]))
        except OSError:
            continue
    if not firsts or not all(first.startswith(PRESET_MARK) for _, first in firsts):
        return ""
    path, first = firsts[0]
    return f"  {path} is a preset, to merge onto a base config: {first.split(':', 1)[-1].strip()}"


# --- what would have been accepted ------------------------------------------------------------------------
def _import(class_path: str) -> Any:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def class_arguments(class_path: str) -> list[str]:
    """The ``__init__`` argument names of a class (empty when it cannot be imported)."""
    try:
        params = inspect.signature(_import(class_path).__init__).parameters.values()
    except Exception:  # any import failure just means no list of accepted keys
        return []
    return [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def group_keys(parser: ArgumentParser, group: str) -> list[str]:
    """The option names directly under ``group`` ("" for the top level) of a parser."""
    names: list[str] = []
    depth = len(group.split(".")) if group else 0
    for action in parser._actions:
        parts = (action.dest or "").split(".")
        if group and parts[:depth] != group.split("."):
            continue
        if len(parts) > depth and parts[depth] not in names and parts[depth] not in ("help", "__default_config__"):
            names.append(parts[depth])
    return names


def class_candidates(key: str, class_path: str) -> list[str]:
    """Importable class names near ``class_path``: its module's public names, or the modules for ``key``."""
    module, _, _ = class_path.rpartition(".")
    modules = [module] if module else CLASS_MODULES.get(key, [])
    found = []
    for name in modules:
        try:
            mod = importlib.import_module(name)
        except Exception:  # a mistyped module: nothing to suggest from it
            continue
        public = getattr(mod, "__all__", None) or [n for n in dir(mod) if not n.startswith("_")]
        found += [f"{name}.{n}" if module else n for n in public if n[:1].isupper()]
    return found


def _suggest(word: str, choices: list[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


# --- the message --------------------------------------------------------------------------------------------
def _accepted(parser: ArgumentParser, key: str) -> tuple[str, str, list[str]]:
    """For an unknown dotted ``key`` of the parser itself: the unknown part, its group and the group's keys."""
    parts, group = key.split("."), ""
    for i, part in enumerate(parts):
        keys = group_keys(parser, group)
        if part not in keys or i == len(parts) - 1:
            return part, group, keys
        group = _join(group, part)
    return parts[-1], group, []


def _keys_line(owner: str, accepted: list[str], name: str) -> str:
    if len(accepted) > MAX_LISTED:  # e.g. the Trainer's 40 arguments: the nearest ones and where the rest are
        near = difflib.get_close_matches(name, accepted, n=6, cutoff=0) if name else accepted[:6]
        return f"  accepted keys of {owner} include {', '.join(near)} … ({len(accepted)} in all, see --help)"
    return f"  accepted keys of {owner}: {', '.join(accepted)}"


def yaml_problem(argv: list[str]) -> str:
    """``file:line: invalid YAML: …`` for the first config file that YAML cannot read."""
    for path in config_files(argv):
        try:
            yaml.safe_load(read_config(path))
        except OSError:
            continue
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            return f"{where}: invalid YAML: {getattr(err, 'problem', None) or err}"
    return ""


def explain(message: str, parser: ArgumentParser, argv: list[str], commands: list[str] | None = None) -> str:
    """One or two lines for a jsonargparse error ``message`` raised while parsing ``argv``."""
    if message.startswith("Problems parsing config") and (bad_yaml := yaml_problem(argv)):
        return bad_yaml
    problem = parse_message(message)
    kind, where = locate(problem.key, argv) if problem.key else ("", "")
    head = f"{where}: " if kind == "file" else ""
    # On the command line the option names the key; in a file the key is named after file:line.
    key = where if kind == "option" else problem.key
    lines: list[str]
    if problem.kind == "unknown_key":
        if problem.class_path:
            name, owner = problem.key.rpartition(".")[2], problem.class_path
            accepted = class_arguments(owner)
        else:
            name, group, accepted = _accepted(_subparser(parser, argv), problem.key)
            owner = group or "the top level"
        lines = [f"{head}unknown {'option' if kind == 'option' else 'key'} {key}{_suggest(name, accepted)}"]
        if problem.class_path.rpartition(".")[2] in BASE_CLASSES:
            top = problem.key.split(".")[0]
            lines.append(f"  {top}.class_path is not set, so {top} has no arguments; give one (or merge this file "
                         "onto a config that does)")
        elif accepted:
            lines.append(_keys_line(owner, accepted, name))
    elif problem.kind == "type":
        lines = [f"{head}{key}: expected {problem.expected}, got {problem.value!r}"]
    elif problem.kind == "class":
        candidates = class_candidates(problem.key, problem.value)
        lines = [f"{head}{key}: no class {problem.value!r}{_suggest(problem.value, candidates)}"]
    elif problem.kind == "file":
        lines = [f"{key}: file not found: {problem.value}"]
    elif problem.kind == "command":
        choices = list(commands or [])
        lines = [f"unknown command {problem.value!r}{_suggest(problem.value, choices)}; commands: {', '.join(choices)}"]
    else:
        detail = re.sub(r"^Expected an? ", "expected ", _short_type(problem.expected))
        lines = [f"{head}{key + ': ' if key else ''}{detail}"]
    note = preset_note(argv)
    return "\n".join([lines[0], note] if note else lines)


def _subparser(parser: ArgumentParser, argv: list[str]) -> ArgumentParser:
    action = getattr(parser, "_subcommands_action", None)
    if action is not None:
        for arg in argv:
            if arg in action._name_parser_map:
                return action._name_parser_map[arg]
    return parser


class SstkitArgumentParser(LightningArgumentParser):
    """LightningCLI's parser whose errors are one or two lines naming the file (and line), key and expectation."""

    argv: list[str] = []  # the arguments being parsed, shared by the subcommand parsers
    commands: list[str] = []  # every subcommand, sstkit's own included, for "did you mean"
    start_dir = "."  # the working directory when parsing started
    _depth = 0

    def parse_args(self, args: Any = None, *more: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        # Subcommand parsers parse their own slice of the arguments inside the root parser's call: keep the root's.
        cls = SstkitArgumentParser
        if cls._depth == 0:
            cls.argv = list(sys.argv[1:] if args is None else args)
            cls.start_dir = os.getcwd()
        cls._depth += 1
        try:
            return super().parse_args(args, *more, **kwargs)
        finally:
            cls._depth -= 1

    def add_subcommands(self, *args: Any, **kwargs: Any) -> Any:
        action = super().add_subcommands(*args, **kwargs)
        if self.commands:  # set after the subcommand parsers took their prog ("sstkit fit") from the usage
            self.usage = f"%(prog)s [-h] [-c CONFIG] [--print_config[=flags]] {{{','.join(self.commands)}}} ..."
        return action

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        from jsonargparse._common import debug_mode_active

        if not self.exit_on_error or debug_mode_active():
            super().error(message, ex)
        self._logger.error(message)
        sys.stderr.write(f"error: {explain(message, self, self.argv, self.commands)}\n")
        self.exit(2)
