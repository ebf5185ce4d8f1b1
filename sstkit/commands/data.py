"""``sstkit data download``: lays out a data folder the DataModules read, for users with a network.

Example::

    sstkit data download sst2 agnews wikitext2 planetoid --to data
    export SSTKIT_DATA=$PWD/data            # or `data_dir:` in a config; ./data is the default anyway

It writes ``sst2/{train,dev,test}.tsv``, ``agnews/{train,test}.tsv``, ``wikitext2/{train,valid,test}.txt`` and
``planetoid/{Cora,CiteSeer}/raw/ind.*`` (see :mod:`sstkit.commands.data_sources` for where each comes from), and
records the SHA-256 of every file in ``<DIR>/SHA256SUMS`` (``sha256sum -c SHA256SUMS`` checks it too). A re-run
verifies the files against that manifest instead of downloading again; a file that changed stops the command
(``--force`` downloads it again). Files are staged in a hidden folder and moved into place only when a data set
is complete, so an interrupted download never leaves half a data set.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import os
import shutil
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sstkit.commands.data_sources import SOURCES, Source
from sstkit.errors import SstkitError
from sstkit.paths import DATA_ENV

MANIFEST = "SHA256SUMS"
OFFLINE_HINT = f"no network? Copy a prepared data folder instead and point {DATA_ENV}=/path (or `data_dir:`) at it"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sstkit data", description="Data folders for sstkit's DataModules.")
    sub = parser.add_subparsers(dest="action", required=True)
    download = sub.add_parser(
        "download", help="download data sets into a data folder, with checksums",
        description="Lays out the data folder the DataModules read (needs a network). SHA-256s go to "
                    f"DIR/{MANIFEST}; a re-run verifies them instead of downloading again.")
    download.add_argument("names", nargs="+", metavar="NAME", help=f"data sets: {', '.join(SOURCES)}")
    download.add_argument("--to", required=True, type=Path, metavar="DIR",
                          help="the data folder to write (then set SSTKIT_DATA=DIR)")
    download.add_argument("--force", action="store_true", help="download again even where files are present")
    return parser


def sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(root: Path) -> dict[str, str]:
    """``relative path -> sha256`` from ``<root>/SHA256SUMS`` (empty when there is none)."""
    path = root / MANIFEST
    if not path.is_file():
        return {}
    sums = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            digest, sep, name = line.partition("  ")
            if not sep or len(digest) != 64:
                raise SstkitError(f"{path}:{lineno}: expected '<sha256>  <relative path>', found {line!r}")
            sums[name] = digest
    return sums


def write_manifest(root: Path, sums: dict[str, str]) -> None:
    """Writes ``sha256sum``'s format, sorted, atomically."""
    tmp = root / f".{MANIFEST}.tmp{os.getpid()}"
    tmp.write_text("".join(f"{sums[name]}  {name}\n" for name in sorted(sums)), encoding="utf-8")
    os.replace(tmp, root / MANIFEST)


def verify(root: Path, source: Source, sums: dict[str, str]) -> str | None:
    """Why ``source``'s files in ``root`` must be downloaded, or None when they are present and verified.

    Raises:
        SstkitError: a file differs from its recorded checksum (changed or corrupt).
    """
    missing = [f for f in source.files if not (root / f).is_file()]
    if missing:
        return f"{len(missing)} of {len(source.files)} files missing"
    unrecorded = [f for f in source.files if f not in sums]
    if unrecorded:
        raise SstkitError(f"{root / unrecorded[0]} is present but has no checksum in {root / MANIFEST} (not written "
                          "by `sstkit data download`); --force replaces the data set")
    for name in source.files:
        if sha256(root / name) != sums[name]:
            raise SstkitError(f"{root / name}: SHA-256 differs from {root / MANIFEST} (the file changed or is "
                              "corrupt); --force downloads the data set again")
    return None


def install(root: Path, name: str, source: Source, progress: Progress) -> dict[str, str]:
    """Fetches ``source`` into a staging folder, checks it, moves its files into ``root``; returns their sums."""
    staging = root / f".download-{name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    task = progress.add_task(f"{name} ({source.origin})", total=len(source.files) + 1)
    try:
        source.fetch(staging, lambda text: progress.update(task, description=f"{name}: {text}"))
        sums = {}
        for file in source.files:
            path = staging / file
            if not path.is_file() or path.stat().st_size == 0:
                raise SstkitError(f"the download wrote no {file}")
            sums[file] = sha256(path)
            expected = source.known_sha256.get(file)
            if expected and sums[file] != expected:
                raise SstkitError(f"{file} has SHA-256 {sums[file]}, expected {expected} (corrupt download)")
            progress.advance(task)
        for file in source.files:
            (root / file).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / file, root / file)
        progress.update(task, description=f"{name}: done", completed=len(source.files) + 1)
        return sums
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download(names: list[str], root: Path, force: bool = False, console: Console | None = None) -> None:
    """Downloads the named data sets into ``root`` (see the module docstring)."""
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        near = difflib.get_close_matches(unknown[0], list(SOURCES), n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise SstkitError(f"unknown data set {unknown[0]!r}{hint}; known: {', '.join(SOURCES)}")
    console = console or Console(stderr=True)
    root.mkdir(parents=True, exist_ok=True)
    sums = read_manifest(root)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        for name in dict.fromkeys(names):
            source = SOURCES[name]
            reason = "--force" if force else verify(root, source, sums)
            if reason is None:
                progress.console.print(f"{name}: present, checksums verified")
                continue
            try:
                sums.update(install(root, name, source, progress))
            except SstkitError as err:
                first = str(err).splitlines()[0]
                hint = f" — {OFFLINE_HINT}" if "could not download" in first else ""
                raise SstkitError(f"{name}: {first}{hint}") from err
            write_manifest(root, sums)  # after each data set, so an interruption keeps what is complete
    console.print(f"data folder ready: {root} (checksums in {root / MANIFEST}); use it with {DATA_ENV}={root}")


def data_main(argv: list[str]) -> int:
    """Entry point of ``sstkit data``."""
    args = build_parser().parse_args(argv)
    download(args.names, args.to, args.force)
    return 0
