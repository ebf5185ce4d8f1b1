"""Reads offline W&B runs straight from their ``run-<id>.wandb`` files.

A run logged with ``mode="offline"`` (or before ``wandb sync``) lives in ``<dir>/wandb/offline-run-<date>-<id>/``,
and everything the table needs is in ``run-<id>.wandb``. Up to wandb 0.17 the Python package shipped a reader
for that file (``wandb.sdk.internal.datastore``); newer releases do the parsing inside the Go ``wandb-core``
binary and no longer expose it to Python, so this module carries a small reader of its own. It depends only on
the protobuf classes that wandb still ships (``wandb.proto.wandb_internal_pb2``).

The file format (checked against files written by wandb 0.31) is the LevelDB log format with a W&B header:

- a 7-byte file header: the ASCII ident ``:W&B``, the magic ``0xBEE1`` (uint16, little-endian) and a version
  byte (0);
- then 32 KiB blocks, counted from the start of the file (the header sits in the first block). Each block holds
  records with a 7-byte header: CRC-32 (zlib's, seeded with the type byte, then over the payload; uint32 LE),
  payload length (uint16 LE) and type (1 FULL, 2 FIRST, 3 MIDDLE, 4 LAST). Records never straddle a block; a
  block tail shorter than a header is zero padding. A payload split over blocks is FIRST, MIDDLE..., LAST.
- each reassembled payload is one ``wandb_internal_pb2.Record`` protobuf message.

A file that ends in a partial record (truncated, or still being written) or holds a record whose checksum does
not match is damaged: :func:`read_wandb_offline` reports it as unreadable, with the reason, rather than guess at
the run's status from what came before. A complete file without an exit record is a ``crashed`` run.

Example:
    >>> runs = read_wandb_offline("runs/sst2/wandb")  # doctest: +SKIP
    >>> runs[0].config["model"]["init_args"]["backbone"], runs[0].status  # doctest: +SKIP
    ('minilm', 'finished')
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from sstkit.bench.records import RunData, Unreadable, collect, flatten_numbers, seed_from_config
from sstkit.errors import DataError, SstkitError

FILE_IDENT = b":W&B"
FILE_MAGIC = 0xBEE1
FILE_VERSION = 0
HEADER_LEN = 7
BLOCK_LEN = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class LogReader:
    """Iterates over the payloads of a W&B LevelDB-format log file.

    After iteration, ``complete`` is False if the file ended in a partial or corrupt record (the iteration stops
    there rather than guessing at the rest), and ``problem`` says what was wrong and where.

    Example:
        >>> with open("run-abc.wandb", "rb") as fp:  # doctest: +SKIP
        ...     reader = LogReader(fp, name="run-abc.wandb")
        ...     payloads = list(reader)
    """

    def __init__(self, fp: IO[bytes], name: str = "") -> None:
        self._fp = fp
        self._name = name
        self.complete = True
        self.problem = ""

    def _stop(self, problem: str) -> None:
        self.complete = False
        self.problem = self.problem or problem

    def _check_file_header(self, block: bytes) -> None:
        if len(block) < HEADER_LEN or block[:4] != FILE_IDENT:
            raise DataError(self._name, "not a W&B run file (missing the ':W&B' header)")
        _ident, magic, version = struct.unpack("<4sHB", block[:HEADER_LEN])
        if magic != FILE_MAGIC or version != FILE_VERSION:
            raise DataError(
                self._name,
                f"unsupported W&B run file format (magic {magic:#06x}, version {version}; this reader knows "
                f"{FILE_MAGIC:#06x} version {FILE_VERSION})",
            )

    def __iter__(self) -> Iterator[bytes]:
        pending: bytearray | None = None
        first_block = True
        offset = 0
        while True:
            block = self._fp.read(BLOCK_LEN)
            if first_block and len(block) < HEADER_LEN and FILE_IDENT.startswith(block[:4]):
                # The writer has created the file but not its header yet: a run that is just starting.
                self._stop("no W&B header yet (empty file: a run that has just started, or a copy cut short)")
                return
            if first_block:
                self._check_file_header(block)
            pos = HEADER_LEN if first_block else 0
            first_block = False
            if not block:
                break
            while len(block) - pos >= HEADER_LEN:
                checksum, length, rtype = struct.unpack_from("<IHB", block, pos)
                if rtype == 0 and length == 0:
                    # Zero bytes: either the padding at a block's tail or space the writer has not filled yet.
                    break
                data = block[pos + HEADER_LEN : pos + HEADER_LEN + length]
                if len(data) < length:
                    self._stop(f"truncated: ends inside a record at byte {offset + pos}")
                    return
                if zlib.crc32(data, zlib.crc32(bytes([rtype]))) != checksum:
                    self._stop(f"corrupt: checksum mismatch in the record at byte {offset + pos}")
                    return
                pos += HEADER_LEN + length
                if rtype == FULL:
                    pending = None
                    yield bytes(data)
                elif rtype == FIRST:
                    pending = bytearray(data)
                elif rtype == MIDDLE and pending is not None:
                    pending += data
                elif rtype == LAST and pending is not None:
                    yield bytes(pending + data)
                    pending = None
                else:
                    self._stop(f"corrupt: record type {rtype} out of sequence at byte {offset + pos}")
                    return
            if len(block) < BLOCK_LEN:
                # A short block is the end of the file; trailing non-zero bytes are a half-written header.
                if any(block[pos:]):
                    self._stop(f"truncated: ends inside a record header at byte {offset + pos}")
                break
            offset += len(block)
        if pending is not None:
            self._stop("truncated: ends inside a record split over blocks")


def _set_nested(target: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        child = target.get(key)
        if not isinstance(child, dict):
            child = target[key] = {}
        target = child
    target[keys[-1]] = value


def _del_nested(target: dict[str, Any], keys: list[str]) -> None:
    for key in keys[:-1]:
        target = target.get(key)  # type: ignore[assignment]
        if not isinstance(target, dict):
            return
    target.pop(keys[-1], None)


def _item_keys(item: Any) -> list[str]:
    return list(item.nested_key) if item.nested_key else [item.key]


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _history_value(item: Any) -> Any:
    """A history item's value: newer wandb versions may write a typed field instead of ``value_json``."""
    try:
        which = item.WhichOneof("value")
    except ValueError:  # protobuf without the typed oneof
        which = None
    if which is None:
        return _loads(item.value_json)
    if which == "none":
        return None
    if which == "json":
        return _loads(item.json)
    return getattr(item, which)


def _apply(target: dict[str, Any], update: Any) -> None:
    for item in update.update:
        _set_nested(target, _item_keys(item), _loads(item.value_json))
    for item in update.remove:
        _del_nested(target, _item_keys(item))


def parse_run_file(path: str | os.PathLike, allow_partial: bool = False) -> RunData:
    """Reads one ``run-<id>.wandb`` file into a :class:`RunData` (see :func:`parse_run_files`)."""
    return parse_run_files([Path(path)], allow_partial=allow_partial)


def parse_run_files(paths: list[Path], allow_partial: bool = False) -> RunData:
    """Reads the files of one run, oldest first, into a :class:`RunData`.

    A run resumed with the same id (sstkit's ``fit`` then ``test`` segments, a requeued job) gets one offline
    folder per segment; the files are merged as W&B merges them on sync: later config and summary values win,
    and the status is that of the last segment.

    Config keys come back nested as logged; summary values are flattened with ``.`` (W&B's own convention:
    ``{"val": {"acc": 0.9}}`` is ``val.acc``). Keys missing from the summary fall back to their last history
    value, which matters for killed runs. W&B's own ``_runtime`` stays under that name: it is not sstkit's
    ``wall_time_s`` (the sum of the segments' wall times), which sstkit runs write into their summary themselves.

    Args:
        paths: the run's files, oldest segment first.
        allow_partial: keep what comes before a truncated or corrupt record (``extra["complete"]`` is then
            False) instead of raising; for looking into a live run, never for a table.

    Raises:
        DataError: if a file is unreadable, is not a W&B run file, or (unless ``allow_partial``) is truncated or
            holds a corrupt record; the message says which and where.
    """
    try:
        from google.protobuf.message import DecodeError
        from wandb.proto import wandb_internal_pb2 as pb
    except ImportError as err:  # pragma: no cover - wandb is a dependency
        raise SstkitError(f"reading offline W&B runs needs the wandb package ({err})") from None

    run_info: dict[str, Any] = {}
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    history_last: dict[str, Any] = {}
    exit_code: int | None = None
    complete = True
    for path in paths:
        exit_code = None  # only the last segment's exit decides the status
        try:
            with path.open("rb") as fp:
                reader = LogReader(fp, name=str(path))
                for payload in reader:
                    record = pb.Record()
                    try:
                        record.ParseFromString(payload)
                    except DecodeError:
                        if not allow_partial:
                            raise DataError(path, "corrupt: a record is not a W&B protobuf message") from None
                        complete = False
                        continue
                    kind = record.WhichOneof("record_type")
                    if kind == "run":
                        _read_run_record(record.run, run_info)
                        _apply(config, record.run.config)
                        _apply(summary, record.run.summary)
                    elif kind == "config":
                        _apply(config, record.config)
                    elif kind == "summary":
                        _apply(summary, record.summary)
                    elif kind == "history":
                        row: dict[str, Any] = {}
                        for item in record.history.item:
                            _set_nested(row, _item_keys(item), _history_value(item))
                        history_last.update(flatten_numbers(row))
                    elif kind == "exit":
                        exit_code = int(record.exit.exit_code)
                complete = complete and reader.complete
                if not reader.complete and not allow_partial:
                    raise DataError(path, reader.problem)
        except OSError as err:
            raise DataError(path, f"cannot read W&B run file: {err}") from None

    config.pop("_wandb", None)
    summary.pop("_wandb", None)
    metrics = {**history_last, **flatten_numbers(summary)}
    if exit_code is None:
        status = "crashed"
    else:
        status = "finished" if exit_code == 0 else "failed"
    run_id = run_info.get("run_id") or _id_from_name(paths[-1])
    extra = {
        key: run_info[key]
        for key in ("entity", "project", "run_group", "job_type", "tags", "started")
        if key in run_info
    }
    extra.update({"exit_code": exit_code, "complete": complete, "summary": summary, "files": [str(p) for p in paths]})
    return RunData(
        id=str(run_id),
        name=str(run_info.get("display_name") or config.get("name") or run_id),
        seed=seed_from_config(config),
        status=status,
        config=config,
        metrics=metrics,
        source=str(paths[-1]),
        extra=extra,
    )


def _read_run_record(run: Any, run_info: dict[str, Any]) -> None:
    # Every segment repeats the run record; later non-empty fields win, the first start time stays.
    for name in ("run_id", "entity", "project", "display_name", "run_group", "job_type"):
        if getattr(run, name):
            run_info[name] = getattr(run, name)
    if run.tags:
        run_info["tags"] = list(run.tags)
    if run.HasField("start_time") and run.start_time.seconds:
        started = _dt.datetime.fromtimestamp(run.start_time.seconds, tz=_dt.timezone.utc)
        run_info.setdefault("started", started.isoformat())


def _id_from_name(path: Path) -> str:
    return path.stem.removeprefix("run-")


def find_run_files(root: str | os.PathLike) -> list[Path]:
    """All ``run-*.wandb`` files under ``root`` (or ``root`` itself), sorted by path.

    Offline run folders are named ``offline-run-<date>_<time>-<id>``, so path order is start order. Symlinks
    such as ``wandb/latest-run`` are not followed, so no run is read twice.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    found: list[Path] = []
    for dirpath, _dirnames, filenames in os.walk(root):
        found.extend(Path(dirpath) / f for f in filenames if f.startswith("run-") and f.endswith(".wandb"))
    return sorted(found)


def read_wandb_offline(root: str | os.PathLike, unreadable: list[Unreadable] | None = None) -> list[RunData]:
    """Reads every offline W&B run under ``root`` (a ``wandb/`` folder, a run folder or a ``.wandb`` file).

    Args:
        root: where to look.
        unreadable: if given, a run with a damaged file (truncated, corrupt, not a W&B file) is appended here
            and skipped instead of raising.

    Raises:
        DataError: if ``root`` does not exist, or a file is damaged and ``unreadable`` is None.

    Example:
        >>> [r.status for r in read_wandb_offline("runs/sst2/wandb")]  # doctest: +SKIP
        ['finished', 'finished', 'crashed']
    """
    if not Path(root).exists():
        raise DataError(root, "folder of W&B runs not found")
    by_id: dict[str, list[Path]] = {}
    for path in find_run_files(root):
        by_id.setdefault(_id_from_name(path), []).append(path)
    # Segments of one run share its id; sorting by folder name (offline-run-<date>_<time>-<id>) orders them.
    runs = [collect(unreadable, parse_run_files, sorted(paths, key=lambda p: p.parent.name)) for paths in by_id.values()]
    return [r for r in runs if r is not None]
