"""``sstkit llm2llm``: LLM2LLM's iterative, targeted augmentation of a low-data text classifier, and its baselines.

Usage::

    sstkit llm2llm --config configs/llm2llm/sst2/rule.yaml                    # LLM2LLM with the rule teacher
    sstkit llm2llm --config configs/llm2llm/sst2/rule.yaml --mode random      # a baseline, same data and seed
    sstkit llm2llm --config configs/llm2llm/sst2/rule.yaml --set teacher.kind=retrieval --seed 1

The config (see ``configs/llm2llm/sst2/rule.yaml``) has the sections ``data`` (task files, seed and pool sizes),
``student`` (an sstkit config such as ``configs/bert/sst2/finetune.yaml`` plus overrides), ``teacher`` (``rule``,
``retrieval`` or ``chat``) and ``llm2llm`` (mode, iterations, n per example, retries, dedup threshold). The loop
keeps its files in ``<run_root>/<name>-<mode>/seed<seed>/iter<i>/`` and each student run in
``<run_root>/<name>-<mode>-iter<i>/seed<seed>/``; rerunning the same command resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path
from typing import Any

from sstkit.commands.config_file import load_config
from sstkit.errors import SstkitError
from sstkit.functional.llm2llm import Llm2LlmLoop, LoopConfig, history_table, seed_examples
from sstkit.functional.llm2llm.loop import MODES
from sstkit.paths import resolve_data_dir

TEACHERS = ("rule", "retrieval", "chat", "template")
# What each kind of student can be taught by: classes need label-preserving teachers, a generation task's
# questions need a teacher that also writes (or finds) their answers.
STUDENT_TEACHERS = {"classification": ("rule", "retrieval", "chat"), "generation": ("template", "retrieval")}
# The keys each section may hold (a typo must stop the command, not be ignored or end in a traceback).
TEACHER_KEYS = {"rule": {"edit_rate", "operations"}, "retrieval": {"backbone"},
                "chat": {"model", "max_new_tokens", "temperature", "top_p", "batch_size", "task", "require_label"},
                "template": {"spread"}}
STUDENT_KEYS = {"config", "overrides", "keep_checkpoints", "max_new_tokens"}
LOOP_KEYS = {"mode", "iterations", "per_example", "max_attempts", "dedup_threshold", "one_shot_size", "match_sizes",
             "match_from"}
DATA_DEFAULTS = {"data_dir": None, "dataset_folder": "sst2", "train_file": "train.tsv", "val_file": "dev.tsv",
                 "test_file": "test.tsv", "header": ["sentence", "label"], "num_labels": 2,
                 "label_names": ["negative", "positive"], "seed_examples": 32, "pool_size": 2000,
                 "test_samples": None, "generator": None, "generator_sizes": [2000, 100, 500]}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sstkit llm2llm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the LLM2LLM YAML file")
    parser.add_argument("--mode", choices=MODES, default=None, help="override llm2llm.mode (the baselines)")
    parser.add_argument("--seed", type=int, default=None, help="override seed (seed data, student, teacher)")
    parser.add_argument("--name", default=None, help="override name (run folder prefix)")
    parser.add_argument("--run_root", default=None, help="folder of the runs (default: config, $SSTKIT_RUNS, runs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set llm2llm.iterations=5 (repeatable)")
    return parser


def task_files(data: dict[str, Any], workdir: Path) -> tuple[Path, dict[str, Any]]:
    """The training file and the student's task settings (absolute validation and test paths).

    ``data.test_samples`` writes the first that many test rows to ``<workdir>/test<N>.tsv``, which the student then
    tests on (a file rather than a DataModule limit, which would also cut the student's own training data).
    """
    root = resolve_data_dir(data["data_dir"]) / data["dataset_folder"]
    paths = {key: root / data[key] for key in ("train_file", "val_file", "test_file")}
    for key, path in paths.items():
        if not path.is_file():
            raise SstkitError(f"data.{key}: no such file {path} (set data.data_dir or $SSTKIT_DATA)")
    test = paths["test_file"]
    if data["test_samples"]:
        lines = test.read_text(encoding="utf-8").splitlines()
        keep = lines[: int(data["test_samples"]) + (1 if data["header"] else 0)]
        test = workdir / f"test{int(data['test_samples'])}.tsv"
        workdir.mkdir(parents=True, exist_ok=True)
        test.write_text("\n".join(keep) + "\n", encoding="utf-8")
    # tokenizer_file: a generation student's BPE is trained on the whole training file, the same every iteration.
    task = {"val_file": str(paths["val_file"].resolve()), "test_file": str(test.resolve()),
            "header": data["header"], "num_labels": int(data["num_labels"]),
            "tokenizer_file": str(paths["train_file"].resolve())}
    return paths["train_file"], task


def split_seed_and_pool(train_file: Path, data: dict[str, Any], seed: int,
                        generation: bool = False) -> tuple[list, list[str], list]:
    """Seed examples D_0 and a disjoint pool, both drawn from the training file with ``seed``.

    Labels are classes, or for a generation student the answers (``prompt<TAB>answer`` rows).
    """
    if generation:
        from sstkit.datamodules.prompt_answer import read_pairs

        texts, labels = read_pairs(train_file, data["header"])
    else:
        from sstkit.datamodules.text_files import read_labelled_file

        texts, labels = read_labelled_file(train_file, data["header"], num_labels=int(data["num_labels"]))
    k, pool = int(data["seed_examples"]), int(data["pool_size"])
    if not 0 < k < len(texts):
        raise SstkitError(f"data.seed_examples must be in [1, {len(texts) - 1}] for {train_file}, got {k}")
    order = random.Random(seed).sample(range(len(texts)), min(len(texts), k + pool))
    seeds = seed_examples([texts[i] for i in order[:k]], [labels[i] for i in order[:k]])
    return seeds, [texts[i] for i in order[k:]], [labels[i] for i in order[k:]]


def check_keys(section: str, given: dict[str, Any], allowed: set[str]) -> None:
    """Fails naming the first key of ``given`` that ``allowed`` lacks."""
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise SstkitError(f"{section}.{unknown[0]}: unknown key; expected one of {sorted(allowed)}")


def build_teacher(spec: dict[str, Any], data: dict[str, Any], pool: tuple[list[str], list], seed: int,
                  student: str = "classification") -> Any:
    """The teacher a config's ``teacher`` section names, for a ``classification`` or ``generation`` student."""
    kind = spec.get("kind")
    if kind in TEACHERS and kind not in STUDENT_TEACHERS[student]:
        raise SstkitError(f"teacher.kind {kind!r} cannot teach a {student} student; expected one of "
                          f"{list(STUDENT_TEACHERS[student])}")
    # Settings of the other kinds may stay in the section, so `--set teacher.kind=retrieval` switches a config.
    check_keys("teacher", {k: v for k, v in spec.items() if k != "kind"}, set().union(*TEACHER_KEYS.values()))
    options = {k: v for k, v in spec.items() if k in TEACHER_KEYS.get(kind, ())}
    if kind == "rule":
        from sstkit.functional.llm2llm import RuleTeacher

        return RuleTeacher(seed=seed, **options)
    if kind == "retrieval":
        from sstkit.functional.llm2llm import RetrievalTeacher, minilm_embedder

        return RetrievalTeacher(*pool, minilm_embedder(options.get("backbone", "minilm")),
                                match_label=student == "classification")
    if kind == "template":
        from sstkit.functional.llm2llm.arithmetic import TemplateTeacher

        return TemplateTeacher(seed=seed, **options)
    if kind == "chat":
        from sstkit.functional.llm2llm import ChatTeacher
        from sstkit.generation import GenerationSettings, load_chat_backend

        settings = GenerationSettings(**{k: options[k] for k in ("max_new_tokens", "temperature", "top_p", "batch_size")
                                         if k in options}, seed=seed)
        extra = {k: options[k] for k in ("task", "require_label") if k in options}
        return ChatTeacher(load_chat_backend(options.get("model", "smollm2")), data["label_names"], settings=settings,
                           **extra)
    raise SstkitError(f"teacher.kind must be one of {list(TEACHERS)}, got {kind!r}")


def match_reference(loop_options: dict[str, Any]) -> None:
    """Fills ``one_shot_size`` / ``match_sizes`` from the finished LLM2LLM run in ``match_from`` (its loop folder).

    ``one_shot`` matches that run's final dataset size; ``random`` matches its size after every round (equal size
    per iteration and in total). Explicit ``one_shot_size`` / ``match_sizes`` win.
    """
    source = loop_options.pop("match_from", None)
    mode = loop_options.get("mode", "llm2llm")
    if not source or mode not in ("one_shot", "random"):
        return
    states = sorted(Path(source).glob("iter*/state.json"), key=lambda p: int(p.parent.name[4:]))
    if not states:
        raise SstkitError(f"llm2llm.match_from: {source} holds no finished iteration (iter*/state.json)")
    sizes = [int(json.loads(state.read_text())["dataset_size"]) for state in states]
    if mode == "one_shot":
        loop_options["one_shot_size"] = loop_options.get("one_shot_size") or sizes[-1]
    elif loop_options.get("match_sizes") is None:
        loop_options["match_sizes"] = sizes[1:]


def llm2llm_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if not Path(args.config).is_file():
        raise SstkitError(f"--config {args.config}: no such file")
    config = load_config(args.config, args.set, sections=())
    unknown = sorted(set(config) - {"name", "seed", "run_root", "data", "student", "teacher", "llm2llm"})
    if unknown:
        raise SstkitError(f"{args.config}: unknown section(s) {unknown}; expected name, seed, run_root, data, "
                          "student, teacher, llm2llm")
    data = {**DATA_DEFAULTS, **(config.get("data") or {})}
    loop_options = dict(config.get("llm2llm") or {})
    student_spec = dict(config.get("student") or {})
    check_keys("data", data, set(DATA_DEFAULTS))
    check_keys("llm2llm", loop_options, LOOP_KEYS)
    check_keys("student", student_spec, STUDENT_KEYS)
    if "config" not in student_spec:
        raise SstkitError(f"{args.config}: student.config (an sstkit config such as configs/bert/sst2/finetune.yaml) is missing")
    if args.mode:
        loop_options["mode"] = args.mode
    seed = args.seed if args.seed is not None else int(config.get("seed", 0))
    match_reference(loop_options)
    from sstkit.commands.llm2llm_generation import CausalLMRunStudent, is_generation_student, write_generated_task
    from sstkit.commands.llm2llm_student import SstkitRunStudent

    generation = is_generation_student(Path(student_spec["config"]))
    loop_config = LoopConfig(**loop_options, seed=seed, header=tuple(data["header"]), check_labels=not generation)
    base_name = args.name or config.get("name") or Path(args.config).stem
    name = f"{base_name}-{loop_config.mode}"
    run_root = Path(args.run_root or config.get("run_root") or os.environ.get("SSTKIT_RUNS", "runs"))
    if data["generator"]:
        data = write_generated_task(data, run_root / f"{base_name}-task")

    workdir = run_root / name / f"seed{seed}"
    train_file, task = task_files(data, workdir)
    common = (Path(student_spec["config"]), task, run_root, name, seed, student_spec.get("overrides"),
              bool(student_spec.get("keep_checkpoints", False)))
    if generation:
        student: SstkitRunStudent = CausalLMRunStudent(*common, int(student_spec.get("max_new_tokens", 8)))
    elif "max_new_tokens" in student_spec:
        raise SstkitError("student.max_new_tokens is for a generation (CausalLM) student only")
    else:
        student = SstkitRunStudent(*common)
    seeds, pool_texts, pool_labels = split_seed_and_pool(train_file, data, seed, generation)
    teacher = None
    if loop_config.mode != "seed_only":
        teacher = build_teacher(dict(config.get("teacher") or {}), data, (pool_texts, pool_labels), seed,
                                "generation" if generation else "classification")
    history = Llm2LlmLoop(student, teacher, loop_config, workdir).run(seeds)
    rows = history_table(history, student.metric)
    (workdir / "history.json").write_text(json.dumps(rows, indent=2))
    for row in rows:
        print(json.dumps(row))
    return 0
