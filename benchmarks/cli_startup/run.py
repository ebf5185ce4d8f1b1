"""Start-up time of ``sstkit --help``, ``sstkit table --help`` and ``import sstkit.functional.sst``, before and after.

Run from the repository root (a few minutes on 2 busy CPU cores; the old code takes seconds per start):

    python benchmarks/cli_startup/run.py --before 2ba88f4 --runs 5

Each command runs ``--runs`` times in a fresh interpreter (``python -m sstkit …``), alternating between the trees so
that machine load hits both alike; the table holds the median, min and max wall time and the median CPU time
(user + system). ``--before REV`` also times the code of a git revision, unpacked with ``git archive`` into a
temporary folder (with the ``callbacks``/``datamodules`` links a checkout has). ``import torch`` is the floor that
no sstkit change removes. Writes ``results.csv`` and ``results.md`` next to this script.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

COMMANDS: dict[str, list[str]] = {
    "sstkit --help": ["-m", "sstkit", "--help"],
    "sstkit table --help": ["-m", "sstkit", "table", "--help"],
    "import sstkit.functional.sst": ["-c", "import sstkit.functional.sst"],
    "import torch (floor)": ["-c", "import torch"],
}


def unpack(rev: str, into: Path) -> Path:
    """The tree of ``rev`` under ``into``, with sstkit/callbacks and sstkit/datamodules linked as in a checkout."""
    archive = into / "tree.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", rev], cwd=REPO, stdout=out, check=True)
    tree = into / "tree"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    for name in ("callbacks", "datamodules"):
        link = tree / "sstkit" / name
        if not link.exists():
            link.symlink_to(Path("..") / name)
    return tree


def time_once(tree: Path, args: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one start in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=tree, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(trees: dict[str, Path], runs: int) -> list[dict[str, object]]:
    times: dict[tuple[str, str], list[tuple[float, float]]] = {(c, t): [] for c in COMMANDS for t in trees}
    for _ in range(runs):
        for command, args in COMMANDS.items():
            for label, tree in trees.items():
                times[command, label].append(time_once(tree, args))
    rows = []
    for (command, label), values in times.items():
        wall, cpu = [v[0] for v in values], [v[1] for v in values]
        rows.append({"command": command, "code": label, "runs": len(values),
                     "wall_median_s": round(statistics.median(wall), 2), "wall_min_s": round(min(wall), 2),
                     "wall_max_s": round(max(wall), 2), "cpu_median_s": round(statistics.median(cpu), 2)})
    return rows


def write(rows: list[dict[str, object]], labels: list[str], load: tuple[float, float], regenerate: str) -> None:
    with (HERE / "results.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    cell = {(r["command"], r["code"]): r for r in rows}
    lines = ["## Start-up time of the sstkit command (seconds, fresh interpreter)", "",
             "| command | " + " | ".join(f"{label}: wall median (min–max) | {label}: CPU median" for label in labels)
             + " |", "|---|" + "---:|---:|" * len(labels)]
    for command in COMMANDS:
        parts = [f"{c['wall_median_s']:.2f} ({c['wall_min_s']:.2f}–{c['wall_max_s']:.2f}) | {c['cpu_median_s']:.2f}"
                 for c in (cell[command, label] for label in labels)]
        lines.append(f"| `{command}` | " + " | ".join(parts) + " |")
    runs = rows[0]["runs"]
    lines += ["", f"{runs} starts each, alternating between the trees; CPU = user + system seconds of the process, "
              "which machine load changes far less than wall time. Load average "
              f"{load[0]:.1f} at the start and {load[1]:.1f} at the end on {os.cpu_count()} CPUs, niceness {os.nice(0)}.",
              f"Regenerate: `{regenerate}`."]
    (HERE / "results.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="Starts per command and tree (the median is reported).")
    parser.add_argument("--before", default=None, help="Also time this git revision (e.g. the commit before lazy imports).")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        trees = {f"before ({args.before})": unpack(args.before, Path(tmp))} if args.before else {}
        trees["now"] = REPO
        rows = measure(trees, args.runs)
    command = "python benchmarks/cli_startup/run.py" + (f" --before {args.before}" if args.before else "")
    write(rows, list(trees), (load_start, os.getloadavg()[0]), f"{command} --runs {args.runs}")
    print((HERE / "results.md").read_text())


if __name__ == "__main__":
    main()
