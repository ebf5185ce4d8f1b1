"""LLM2LLM benchmark (reduced): test accuracy per iteration of LLM2LLM and its baselines, two students.

- ``sst2``: SST-2, all-MiniLM-L6-v2 classifier, 128 seed examples, 2 iterations, rule / retrieval / SmolLM2 teachers;
- ``arithmetic``: procedural one-step arithmetic word problems, a tiny OPT trained from scratch (a generation
  student, greedy exact match), 64 seed problems, 5 iterations, template teacher.

Run from the repository root:

    SSTKIT_DATA=../shared/data python benchmarks/llm2llm/run.py --task sst2 --seeds 0 1 2
    python benchmarks/llm2llm/run.py --task arithmetic --seeds 0 1 2
    python benchmarks/llm2llm/run.py --table-only                          # both tables from the records

Each arm is one ``sstkit llm2llm`` command (configs/llm2llm/*/*.yaml) with the settings below, run into
``benchmarks/llm2llm/runs/`` (not committed); an interrupted benchmark resumes where it stopped (the loop is
resumable). Every finished iteration's state becomes a row of ``results.csv`` (committed): rows of runs on disk
replace the rows with the same key, rows whose runs are gone are kept. The tables ``results.md`` (SST-2) and
``results_arithmetic.md`` are written from ``results.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RULE = "configs/llm2llm/sst2/rule.yaml"
SMOLLM2 = "configs/llm2llm/sst2/smollm2.yaml"
TEMPLATE = "configs/llm2llm/arithmetic/template.yaml"
FIELDS = ["task", "teacher", "mode", "seed", "iteration", "dataset_size", "wrong_seeds", "added", "test_acc"]


@dataclass(frozen=True)
class Task:
    """One benchmark: its arms (label, config, teacher kind, mode, extra --set items), shared settings, table."""

    prefix: str  # the loop folders' name prefix
    common: tuple[str, ...]
    arms: tuple[tuple[str, str, str, str, tuple[str, ...]], ...]  # in order of priority
    share_from: str  # the teacher label whose LLM2LLM arm trains iteration 0 for the others
    columns: int  # iterations in the table
    table: str
    title: str
    caption: str


TASKS = {
    # 128 seed examples, 2 iterations, n = 4 per wrong seed, MiniLM 2 epochs (batch 16, lr 1e-4), the first 300
    # sentences of test.tsv, a retrieval pool of 500 unused training sentences. (With 32 seeds and 6 epochs the
    # student fitted every seed example, so there was nothing to augment, and tested at chance.)
    "sst2": Task(
        "llm2llm-sst2",
        ("--set", "data.seed_examples=128", "--set", "llm2llm.iterations=2", "--set", "llm2llm.per_example=4",
         "--set", "student.overrides.trainer.max_epochs=2", "--set", "data.test_samples=300",
         "--set", "data.pool_size=500"),
        (("rule", RULE, "rule", "llm2llm", ()),
         ("rule", RULE, "rule", "random", ()),
         ("smollm2", SMOLLM2, "chat", "llm2llm", ("--set", "llm2llm.iterations=1", "--set", "llm2llm.per_example=2")),
         ("rule", RULE, "rule", "continued", ()),
         ("rule", RULE, "rule", "one_shot", ()),
         ("retrieval", RULE, "retrieval", "llm2llm", ()),
         ("retrieval", RULE, "retrieval", "random", ())),
        "rule", 3, "results.md",
        "LLM2LLM on SST-2: MiniLM student, 128 seed examples (reduced CPU plan)",
        "SST-2 test accuracy (%, the first 300 sentences of test.tsv) after each iteration; in brackets the size\n"
        "of the training set the student was trained on and the seed examples it then got wrong on it (means over\n"
        "seeds). Iteration 0 is the seed-only baseline. Teachers: rule = WordNet synonyms / deletion / swap,\n"
        "retrieval = nearest unused SST-2 training sentences by MiniLM cosine (real data: an upper bound),\n"
        "smollm2 = SmolLM2-135M-Instruct (1 iteration, n = 2). random / one_shot match the LLM2LLM arm's sizes\n"
        "(random_own: the earlier random baseline, as many random seeds as its own student got wrong). See\n"
        "README.md for what was and was not run."),
    # 64 seed problems of 2000, 5 iterations, n = 4, tiny OPT from scratch 40 epochs, exact match on 500 problems.
    "arithmetic": Task(
        "llm2llm-arithmetic",
        ("--set", "data.seed_examples=64", "--set", "llm2llm.iterations=5", "--set", "llm2llm.per_example=4"),
        (("template", TEMPLATE, "template", "llm2llm", ()),
         ("template", TEMPLATE, "template", "random", ()),
         ("template", TEMPLATE, "template", "one_shot", ()),
         ("template", TEMPLATE, "template", "continued", ()),
         ("retrieval", TEMPLATE, "retrieval", "llm2llm", ()),
         ("retrieval", TEMPLATE, "retrieval", "random", ())),
        "template", 6, "results_arithmetic.md",
        "LLM2LLM with a generation student: tiny OPT on arithmetic word problems, 64 seed problems (reduced CPU plan)",
        "Greedy exact match (%, 500 procedural test problems) after each iteration; in brackets the size of the\n"
        "training set and the seed problems the student then answered wrong on it (means over seeds). The student\n"
        "is a 2-layer OPT (hidden 64) trained from scratch, 40 epochs per iteration. Iteration 0 is the seed-only\n"
        "baseline. Teachers: template = the wrong problem's template with nearby numbers, answers computed;\n"
        "retrieval = nearest unused training problems by MiniLM cosine. random / one_shot match the LLM2LLM\n"
        "arm's sizes (random: per iteration; one_shot: the final size, in one round). See README.md."),
}


def loop_folder(runs: Path, task: Task, label: str, mode: str, seed: int) -> Path:
    return runs / f"{task.prefix}-{label}-{mode}" / f"seed{seed}"


def share_iteration0(runs: Path, task: Task, label: str, mode: str, seed: int) -> None:
    """Gives an arm the reference LLM2LLM arm's iteration-0 student (same seed data, config and seed: the same run).

    The loop reuses an iteration's ``student.json`` when it exists, so the seed-only student is trained once per
    seed instead of once per arm. Continued fine-tuning needs that run's checkpoint, which is not kept: it trains
    its own.
    """
    source = loop_folder(runs, task, task.share_from, "llm2llm", seed) / "iter0" / "student.json"
    target = loop_folder(runs, task, label, mode, seed) / "iter0" / "student.json"
    if mode == "continued" or (label, mode) == (task.share_from, "llm2llm") or not source.is_file() or target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    record = json.loads(source.read_text())
    target.write_text(json.dumps({**record, "shared_from": str(source.relative_to(runs))}, indent=2))


def run_arm(runs: Path, task: Task, arm: tuple, seed: int) -> None:
    label, config, kind, mode, extra = arm
    if (loop_folder(runs, task, label, mode, seed) / "history.json").is_file():
        print(f"{label} {mode} seed {seed}: done, skipping", flush=True)  # saves loading the teacher again
        return
    share_iteration0(runs, task, label, mode, seed)
    args = ["--config", config, "--mode", mode, "--seed", str(seed), "--name", f"{task.prefix}-{label}",
            "--run_root", str(runs), *task.common, "--set", f"teacher.kind={kind}", *extra]
    if mode in ("one_shot", "random"):  # equal size: the LLM2LLM arm's sizes (random: per round; one-shot: final)
        args += ["--set", f"llm2llm.match_from={loop_folder(runs, task, label, 'llm2llm', seed)}"]
    cmd = [sys.executable, "-m", "sstkit", "llm2llm", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def collect(runs: Path) -> list[dict]:
    """One row per (task, teacher, mode, seed, iteration) from the state files of finished loops on disk."""
    rows = []
    for name, task in TASKS.items():
        for state_file in sorted(runs.glob(f"{task.prefix}-*/seed*/iter*/state.json")):
            if not (state_file.parents[1] / "history.json").is_file():
                continue  # an arm still running: its seed joins the means once all its iterations are done
            state = json.loads(state_file.read_text())
            teacher = state_file.parents[2].name.removeprefix(f"{task.prefix}-").rsplit("-", 1)[0]
            metrics = state["student"]["metrics"]
            rows.append({"task": name, "teacher": teacher, "mode": state["mode"],
                         "seed": int(state_file.parents[1].name[4:]), "iteration": state["iteration"],
                         "dataset_size": state["dataset_size"], "wrong_seeds": state["wrong_seeds"],
                         "added": state["added"], "test_acc": metrics.get("test/acc", metrics.get("test/exact_match"))})
    return rows


def merge(records: Path, fresh: list[dict]) -> list[dict]:
    """``results.csv``'s rows with those of ``fresh`` (runs on disk) replacing any of the same key."""
    def key(row: dict) -> tuple:
        return row["task"], row["teacher"], row["mode"], int(row["seed"]), int(row["iteration"])

    rows = {}
    if records.is_file():
        with open(records, newline="") as handle:
            for row in csv.DictReader(handle):
                rows[key(row)] = row
    for row in fresh:
        rows[key(row)] = row
    out = []
    for k in sorted(rows):
        row = rows[k]
        out.append({**row, "seed": int(row["seed"]), "iteration": int(row["iteration"]),
                    "dataset_size": int(row["dataset_size"]), "wrong_seeds": int(row["wrong_seeds"]),
                    "added": int(row["added"]), "test_acc": float(row["test_acc"])})
    return out


def cell(values: list[float]) -> str:
    if not values:
        return ""
    mean = 100 * statistics.mean(values)
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ± {100 * statistics.stdev(values):.1f}"


def paired(rows: list[dict]) -> list[str]:
    """Per seed, each arm's final score minus the same teacher's LLM2LLM arm's (same seed data and iteration 0)."""
    final: dict[tuple[str, str], dict[int, tuple[int, float]]] = {}
    for r in rows:
        seeds = final.setdefault((r["teacher"], r["mode"]), {})
        if r["iteration"] >= seeds.get(r["seed"], (-1, 0.0))[0]:
            seeds[r["seed"]] = (r["iteration"], r["test_acc"])
    lines = []
    for (teacher, mode), seeds in sorted(final.items()):
        reference = final.get((teacher, "llm2llm"), {})
        common = sorted(set(seeds) & set(reference))
        if mode == "llm2llm" or not common:
            continue
        diffs = [100 * (seeds[s][1] - reference[s][1]) for s in common]
        per_seed = ", ".join(f"seed {s}: {d:+.1f}" for s, d in zip(common, diffs, strict=True))
        lines.append(f"| {teacher} | {mode} | {per_seed} | {sum(d < 0 for d in diffs)} of {len(diffs)} |")
    if not lines:
        return []
    return ["", "Final score minus the LLM2LLM arm's final score (points; same teacher, paired by seed: the same seed",
            "data and iteration-0 student):", "", "| teacher | mode | per seed | LLM2LLM ahead in |",
            "| --- | --- | --- | --- |", *lines]


def write_table(name: str, task: Task, rows: list[dict], states: int) -> None:
    rows = [r for r in rows if r["task"] == name]
    arms = sorted({(r["teacher"], r["mode"]) for r in rows}, key=lambda a: (a[0], a[1] != "llm2llm", a[1]))
    head = "| teacher | mode | seeds | " + " | ".join(f"iter {i} (size, wrong)" for i in range(task.columns)) + " |"
    lines = [f"## {task.title}", "", task.caption, "", head, "|" + " --- |" * (task.columns + 3)]
    for teacher, mode in arms:
        mine = [r for r in rows if r["teacher"] == teacher and r["mode"] == mode]
        cells = []
        for i in range(task.columns):
            at = [r for r in mine if r["iteration"] == i]
            if not at:
                cells.append("")
                continue
            size = statistics.mean(r["dataset_size"] for r in at)
            wrong = statistics.mean(r["wrong_seeds"] for r in at)
            cells.append(f"{cell([r['test_acc'] for r in at])} ({size:.0f}, {wrong:.0f})")
        seeds = len({r["seed"] for r in mine})
        lines.append(f"| {teacher} | {mode} | {seeds} | " + " | ".join(cells) + " |")
    lines += paired(rows)
    lines += ["", f"<sub>Generated by `python benchmarks/llm2llm/run.py --table-only` from {len(rows)} iteration "
              f"records in results.csv ({states} of them from runs now in benchmarks/llm2llm/runs); do not edit by "
              "hand.</sub>"]
    (HERE / task.table).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=HERE / "runs")
    parser.add_argument("--task", choices=sorted(TASKS), default="sst2")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--teachers", nargs="+", default=None, help="only these teacher labels (default: all)")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    if not args.table_only:
        task = TASKS[args.task]
        for seed in args.seeds:
            for arm in task.arms:
                if args.teachers is None or arm[0] in args.teachers:
                    run_arm(args.runs, task, arm, seed)
    fresh = collect(args.runs)
    rows = merge(HERE / "results.csv", fresh)
    with open(HERE / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows({k: r[k] for k in FIELDS} for r in rows)
    for name, task in TASKS.items():
        write_table(name, task, rows, sum(r["task"] == name for r in fresh))


if __name__ == "__main__":
    main()
