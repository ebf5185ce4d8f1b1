"""LLM2LLM benchmark (reduced): SST-2 test accuracy per iteration of LLM2LLM and its baselines, MiniLM student.

Run from the repository root (the committed table: about 15 CPU-minutes on one core):

    SSTKIT_DATA=../shared/data python benchmarks/llm2llm/run.py             # run what is missing, then the table
    python benchmarks/llm2llm/run.py --table-only                          # the table from finished runs

Each arm is one ``sstkit llm2llm`` command (configs/llm2llm/sst2/*.yaml) with the settings below, run into
``benchmarks/llm2llm/runs/``; an interrupted benchmark resumes where it stopped (the loop is resumable). The table
is built from each loop folder's ``iter<i>/state.json``: test accuracy after each iteration, the dataset size the
student was trained on, and the seed examples it got wrong on its own training data.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RULE = "configs/llm2llm/sst2/rule.yaml"
SMOLLM2 = "configs/llm2llm/sst2/smollm2.yaml"
# Shared by every arm: 128 seed examples, 2 iterations, n = 4 per wrong seed, MiniLM 2 epochs (batch 16, lr 1e-4),
# the first 300 sentences of test.tsv, a retrieval pool of 500 unused training sentences. (With 32 seeds and 6
# epochs the student fitted every seed example, so there was nothing to augment, and tested at chance.)
COMMON = ["--set", "data.seed_examples=128", "--set", "llm2llm.iterations=2", "--set", "llm2llm.per_example=4",
          "--set", "student.overrides.trainer.max_epochs=2", "--set", "data.test_samples=300",
          "--set", "data.pool_size=500"]
# (label, config, teacher kind, mode, extra --set items); one_shot matches the llm2llm arm of the same teacher.
ARMS = [
    ("rule", RULE, "rule", "llm2llm", []),
    ("rule", RULE, "rule", "random", []),
    ("smollm2", SMOLLM2, "chat", "llm2llm", ["--set", "llm2llm.iterations=1", "--set", "llm2llm.per_example=2"]),
    ("rule", RULE, "rule", "continued", []),
    ("rule", RULE, "rule", "one_shot", []),
    ("retrieval", RULE, "retrieval", "llm2llm", []),
    ("retrieval", RULE, "retrieval", "random", []),
]  # in order of priority: an interrupted benchmark has the most informative arms
ITERATIONS = 3  # table columns iter0..iter2


def loop_folder(runs: Path, label: str, mode: str, seed: int) -> Path:
    return runs / f"llm2llm-sst2-{label}-{mode}" / f"seed{seed}"


def share_iteration0(runs: Path, label: str, mode: str, seed: int) -> None:
    """Gives an arm the rule LLM2LLM arm's iteration-0 student (same seed data, config and seed: the same run).

    The loop reuses an iteration's ``student.json`` when it exists, so the seed-only student is trained once per
    seed instead of once per arm. Continued fine-tuning needs that run's checkpoint, which is not kept: it trains
    its own.
    """
    source = loop_folder(runs, "rule", "llm2llm", seed) / "iter0" / "student.json"
    target = loop_folder(runs, label, mode, seed) / "iter0" / "student.json"
    if mode == "continued" or (label, mode) == ("rule", "llm2llm") or not source.is_file() or target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    record = json.loads(source.read_text())
    target.write_text(json.dumps({**record, "shared_from": str(source.relative_to(runs))}, indent=2))


def run_arm(runs: Path, label: str, config: str, kind: str, mode: str, extra: list[str], seed: int) -> None:
    if (loop_folder(runs, label, mode, seed) / "history.json").is_file():
        print(f"{label} {mode} seed {seed}: done, skipping", flush=True)  # saves loading the teacher again
        return
    share_iteration0(runs, label, mode, seed)
    args = ["--config", config, "--mode", mode, "--seed", str(seed), "--name", f"llm2llm-sst2-{label}",
            "--run_root", str(runs), *COMMON, "--set", f"teacher.kind={kind}", *extra]
    if mode == "one_shot":
        args += ["--set", f"llm2llm.one_shot_from={loop_folder(runs, label, 'llm2llm', seed)}"]
    cmd = [sys.executable, "-m", "sstkit", "llm2llm", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def collect(runs: Path) -> list[dict]:
    """One row per (teacher, mode, seed, iteration) from the state files of finished loops."""
    rows = []
    for state_file in sorted(runs.glob("llm2llm-sst2-*/seed*/iter*/state.json")):
        if not (state_file.parents[1] / "history.json").is_file():
            continue  # an arm still running: its seed joins the means once all its iterations are done
        state = json.loads(state_file.read_text())
        teacher = state_file.parents[2].name.removeprefix("llm2llm-sst2-").rsplit("-", 1)[0]
        rows.append({"teacher": teacher, "mode": state["mode"], "seed": int(state_file.parents[1].name[4:]),
                     "iteration": state["iteration"], "dataset_size": state["dataset_size"],
                     "wrong_seeds": state["wrong_seeds"], "added": state["added"],
                     "test_acc": state["student"]["metrics"].get("test/acc")})
    return rows


def cell(values: list[float]) -> str:
    if not values:
        return ""
    mean = 100 * statistics.mean(values)
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}"


def write_tables(rows: list[dict]) -> None:
    with open(HERE / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    arms = sorted({(r["teacher"], r["mode"]) for r in rows}, key=lambda a: (a[0], a[1] != "llm2llm", a[1]))
    head = "| teacher | mode | seeds | " + " | ".join(f"iter {i} acc (size, wrong)" for i in range(ITERATIONS)) + " |"
    lines = ["## LLM2LLM on SST-2: MiniLM student, 128 seed examples (reduced CPU plan)", "",
             "SST-2 test accuracy (%, the first 300 sentences of test.tsv) after each iteration; in brackets the size",
             "of the training set the student was trained on and the seed examples it then got wrong on it (means over",
             "seeds). Iteration 0 is the seed-only baseline. Teachers: rule = WordNet synonyms / deletion / swap,",
             "retrieval = nearest unused SST-2 training sentences by MiniLM cosine (real data: an upper bound),",
             "smollm2 = SmolLM2-135M-Instruct (1 iteration, n = 2). See README.md for what was and was not run.", "",
             head, "|" + " --- |" * (ITERATIONS + 3)]
    for teacher, mode in arms:
        mine = [r for r in rows if r["teacher"] == teacher and r["mode"] == mode]
        cells = []
        for i in range(ITERATIONS):
            at = [r for r in mine if r["iteration"] == i]
            if not at:
                cells.append("")
                continue
            size = statistics.mean(r["dataset_size"] for r in at)
            wrong = statistics.mean(r["wrong_seeds"] for r in at)
            cells.append(f"{cell([r['test_acc'] for r in at])} ({size:.0f}, {wrong:.0f})")
        seeds = len({r["seed"] for r in mine})
        lines.append(f"| {teacher} | {mode} | {seeds} | " + " | ".join(cells) + " |")
    lines += ["", f"<sub>Generated by `python benchmarks/llm2llm/run.py --table-only` from {len(rows)} iteration "
              "states (benchmarks/llm2llm/runs); do not edit by hand.</sub>"]
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=HERE / "runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--teachers", nargs="+", default=["rule", "retrieval", "smollm2"])
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    if not args.table_only:
        for seed in args.seeds:
            for label, config, kind, mode, extra in ARMS:
                if label in args.teachers:
                    run_arm(args.runs, label, config, kind, mode, extra, seed)
    write_tables(collect(args.runs))


if __name__ == "__main__":
    main()
