"""One run, whatever it was read from, and dotted-path access into its config.

Every reader (``summary.json`` files, offline W&B run files, the W&B API) returns :class:`RunData`, so the table
code never knows where a run came from. Config paths use the YAML layout of a LightningCLI config:

    model.init_args.backbone                                 nested keys
    trainer.callbacks[SparseSpectralTraining].init_args.rank  the list item whose class_path ends in that name
    trainer.callbacks[0].class_path                          a list item by index

Example:
    >>> cfg = {"trainer": {"callbacks": [{"class_path": "sstkit.callbacks.SparseSpectralTraining",
    ...                                   "init_args": {"rank": 8}}]}}
    >>> get_path(cfg, "trainer.callbacks[SparseSpectralTraining].init_args.rank")
    8
    >>> get_path(cfg, "model.init_args.lr") is None
    True
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from sstkit.errors import DataError

RunStatus = Literal["finished", "failed", "running", "crashed"]
STATUSES: tuple[str, ...] = ("finished", "failed", "running", "crashed")


class _Missing:
    """The value of a path that does not exist; distinct from a stored ``None``."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


@dataclass
class RunData:
    """A run as the table sees it.

    Attributes:
        id: unique id of the run (the W&B run id where there is one).
        name: the run's name (``name`` in summary.json, the display name in W&B).
        seed: the seed the reader found (``seed``, else ``seed_everything``), or None.
        status: ``finished``, ``failed``, ``running`` or ``crashed``.
        config: the nested config the run was launched with.
        metrics: final numeric values, flat ``{"test/acc": 0.84, "wall_time_s": 12.3}``.
        source: the file or URL the run was read from, for messages.
        extra: anything else the reader knew (versions, W&B ids, start time, ...).

    Example:
        >>> run = RunData(id="abc", name="sst2", seed=0, status="finished", metrics={"test/acc": 0.8})
        >>> run.describe()
        'sst2 seed 0 (abc)'
    """

    id: str
    name: str
    seed: int | None
    status: RunStatus
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self, base: str | os.PathLike | None = None) -> str:
        """A short human label for notes: ``sst2_finetune seed 1 (abc123)``.

        An id that is a file path (a run folder) is shown relative to ``base`` (the spec's folder), so a
        generated table names no machine-specific absolute path.
        """
        seed = f" seed {self.seed}" if self.seed is not None else ""
        return f"{self.name}{seed} ({display_path(self.id, base)})"


@dataclass(frozen=True)
class Unreadable:
    """A run file that could not be read (truncated, corrupt, not what its name says), and why.

    Readers collect these instead of stopping, so one damaged file becomes a note in the table.
    """

    path: str
    reason: str

    def describe(self, base: str | os.PathLike | None = None) -> str:
        return f"{display_path(self.path, base)}, {self.reason}"

    @classmethod
    def from_error(cls, err: DataError) -> Unreadable:
        """The file and the reason of a reader's :class:`~sstkit.errors.DataError` (``path[:line]: reason``)."""
        where = f"{err.path}:{err.line}" if err.line is not None else f"{err.path}"
        reason = str(err).removeprefix(f"{where}: ")
        return cls(str(err.path), reason if err.line is None else f"line {err.line}: {reason}")


def collect(unreadable: list[Unreadable] | None, read: Any, *args: Any) -> Any:
    """``read(*args)``; with an ``unreadable`` list, a :class:`DataError` is appended there and None returned.

    Without a list the error propagates, so a reader used on its own still fails loudly on a damaged file.
    """
    if unreadable is None:
        return read(*args)
    try:
        return read(*args)
    except DataError as err:
        unreadable.append(Unreadable.from_error(err))
        return None


def display_path(text: str, base: str | os.PathLike | None) -> str:
    """``text`` relative to ``base`` if it is an absolute path (and ``base`` is given), else unchanged.

    Example:
        >>> display_path("/work/bench/runs/a/seed0", "/work/bench")
        'runs/a/seed0'
        >>> display_path("abc123", "/work/bench")
        'abc123'
    """
    if base is None or not os.path.isabs(text):
        return text
    try:
        return os.path.relpath(text, base)
    except ValueError:  # another drive on Windows
        return text


_TOKEN = re.compile(r"\[([^\]]*)\]|([^.\[\]]+)|(\.)")


def parse_path(path: str) -> list[tuple[str, Any]]:
    """Splits ``a.b[Cls].c[0]`` into ``[("key","a"), ("key","b"), ("class","Cls"), ("key","c"), ("index",0)]``.

    Raises:
        ValueError: on an empty path, an empty segment or an unclosed bracket.
    """
    tokens: list[tuple[str, Any]] = []
    pos = 0
    if not path:
        raise ValueError("empty path")
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if m is None:
            raise ValueError(f"cannot parse {path!r} at position {pos}")
        bracket, name, dot = m.groups()
        if bracket is not None:
            inner = bracket.strip()
            if not inner:
                raise ValueError(f"empty [] in {path!r}")
            tokens.append(("index", int(inner)) if re.fullmatch(r"-?\d+", inner) else ("class", inner))
        elif name is not None:
            tokens.append(("key", name))
        elif dot is not None and (pos == 0 or path[pos - 1] == "." or pos == len(path) - 1):
            raise ValueError(f"empty segment in {path!r}")
        pos = m.end()
    return tokens


def _class_matches(item: Any, name: str) -> bool:
    if not isinstance(item, dict):
        return False
    class_path = item.get("class_path")
    return isinstance(class_path, str) and (class_path == name or class_path.endswith("." + name))


def _resolve(node: Any, tokens: list[tuple[str, Any]]) -> Any:
    if not tokens:
        return node
    kind, arg = tokens[0]
    if kind == "key":
        if not isinstance(node, dict):
            return MISSING
        # Configs flattened by a logger keep dotted keys ("model.init_args.lr": 1e-3); try the longest such key
        # first so nested and flattened configs resolve alike.
        run = 0
        while run < len(tokens) and tokens[run][0] == "key":
            run += 1
        for k in range(run, 0, -1):
            joined = ".".join(t[1] for t in tokens[:k])
            if joined in node:
                found = _resolve(node[joined], tokens[k:])
                if found is not MISSING:
                    return found
        return MISSING
    if kind == "index":
        if isinstance(node, (list, tuple)) and -len(node) <= arg < len(node):
            return _resolve(node[arg], tokens[1:])
        return MISSING
    # kind == "class": jsonargparse also accepts a single callback given as a mapping instead of a list.
    items = node if isinstance(node, (list, tuple)) else [node]
    for item in items:
        if _class_matches(item, arg):
            return _resolve(item, tokens[1:])
    return MISSING


def get_path(config: Any, path: str, default: Any = None) -> Any:
    """Resolves a dotted path into a nested config; returns ``default`` (None) where it does not exist.

    Args:
        config: nested dicts and lists, as in a LightningCLI YAML file.
        path: ``model.init_args.backbone``, ``trainer.callbacks[SparseSpectralTraining].init_args.rank`` or
            ``trainer.callbacks[0].class_path``.
        default: returned for a missing path; pass :data:`MISSING` to tell a missing key from a stored null.

    Example:
        >>> get_path({"model": {"init_args": {"backbone": "minilm"}}}, "model.init_args.backbone")
        'minilm'
    """
    found = _resolve(config, parse_path(path))
    return default if found is MISSING else found


RUN_FIELDS = ("name", "id", "status", "seed")


def run_value(run: RunData, path: str) -> Any:
    """The value of a row/filter/seed key for a run: a config path, else the run's own name/id/status/seed.

    Example:
        >>> run_value(RunData(id="a", name="sst2", seed=0, status="finished"), "name")
        'sst2'
    """
    value = get_path(run.config, path, default=MISSING)
    if value is MISSING and path in RUN_FIELDS:
        value = getattr(run, path)
    return value


def flatten_numbers(values: dict[str, Any], sep: str = ".", prefix: str = "") -> dict[str, float]:
    """Keeps the numeric leaves of a nested summary, flattening nested keys with ``sep`` (W&B's convention).

    Booleans are not metrics and are dropped; NaN and infinities are kept, since a diverged run should show.

    Example:
        >>> flatten_numbers({"val": {"acc": 0.9}, "test/acc": 1, "note": "x"})
        {'val.acc': 0.9, 'test/acc': 1.0}
    """
    out: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten_numbers(value, sep, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, str) and value.lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
            # JSON cannot hold NaN, so some writers store it as a string.
            out[name] = float(value)
    return out


def is_number(value: Any) -> bool:
    """True for ints and floats (finite or not), False for booleans and everything else."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def seed_from_config(config: dict[str, Any]) -> int | None:
    """The seed a LightningCLI config ran with: ``seed_everything``, else a top-level ``seed``."""
    for key in ("seed_everything", "seed"):
        value = config.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return int(value)
    return None
