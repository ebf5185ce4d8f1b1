"""The LLM2LLM loop (Lee et al., 2024) and its baselines, resumable after a crash at any point.

With seed data D_0, iteration i = 0, 1, …, T:

1. train the student on D_i — from the base weights (``llm2llm``), or from iteration i-1's weights
   (``continued``, the paper's ablation);
2. predict D_i with it (greedy) and keep W_i = the *seed* examples it gets wrong (synthetic ones are never
   augmented again);
3. ask the teacher for n new examples like each w in W_i, drop those whose label differs from w's or whose
   ROUGE-L with any example seen so far exceeds 0.95, retry a request at most ``max_attempts`` times;
4. D_{i+1} = D_i ∪ new.

Baselines: ``seed_only`` trains on D_0 only; ``random`` augments |W_i| seed examples drawn at random instead of
W_i (non-targeted, same size); ``one_shot`` augments W_0 once with as many examples as a finished LLM2LLM run
added in all (``one_shot_size``) and trains once more.

Everything an iteration produces goes to ``<workdir>/iter<i>/``: ``train.tsv`` + ``examples.jsonl`` (D_i),
``student.json`` (the student's run and metrics, written once it is trained and has predicted D_i),
``new.jsonl`` (the teacher's accepted examples) and last ``state.json``. A rerun skips iterations with a
``state.json``, reuses ``student.json`` and recomputes the rest, which is deterministic, so a crash anywhere
leaves neither a gap nor a duplicate.

Example:
    >>> loop = Llm2LlmLoop(student, RuleTeacher(), LoopConfig(iterations=3), workdir=Path("runs/llm2llm"))  # doctest: +SKIP
    >>> history = loop.run(seed_examples(texts, labels))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sstkit.errors import SstkitError
from sstkit.functional.llm2llm.data import (
    Example,
    NearDuplicateFilter,
    atomic_write,
    clean_text,
    load_jsonl,
    save_jsonl,
    write_examples,
)
from sstkit.functional.llm2llm.teachers import Request, Teacher

MODES = ("llm2llm", "continued", "random", "one_shot", "seed_only")


class Student(Protocol):
    """What the loop trains: ``train`` returns a record (JSON-able dict with ``metrics``), ``predict`` labels.

    An optional ``release(record)`` frees what a finished iteration no longer needs (e.g. its checkpoints).
    """

    def train(self, iteration: int, train_file: Path, init_from: dict[str, Any] | None) -> dict[str, Any]: ...

    def predict(self, record: dict[str, Any], examples: Sequence[Example]) -> list[int]: ...


@dataclass
class LoopConfig:
    """The loop's settings.

    Args:
        mode: one of ``llm2llm``, ``continued``, ``random``, ``one_shot``, ``seed_only``.
        iterations: teacher rounds T (the student is trained T + 1 times; ``one_shot``: once more after D_0).
        per_example: new examples asked for each parent per round (the paper's n).
        max_attempts: teacher calls per parent and round at most (the official generator may loop forever).
        dedup_threshold: ROUGE-L above which a new example is a near-duplicate.
        one_shot_size: the final dataset size the ``one_shot`` baseline must reach.
        seed: fixes the teacher's and the ``random`` baseline's choices.
    """

    mode: str = "llm2llm"
    iterations: int = 3
    per_example: int = 2
    max_attempts: int = 3
    dedup_threshold: float = 0.95
    one_shot_size: int | None = None
    seed: int = 0
    header: tuple[str, ...] = field(default=("sentence", "label"))

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise SstkitError(f"llm2llm.mode must be one of {list(MODES)}, got {self.mode!r}")
        for key in ("iterations", "per_example", "max_attempts"):
            if int(getattr(self, key)) < 1:
                raise SstkitError(f"llm2llm.{key} must be >= 1, got {getattr(self, key)}")
        if not 0 < self.dedup_threshold <= 1:
            raise SstkitError(f"llm2llm.dedup_threshold must be in (0, 1], got {self.dedup_threshold}")
        if self.mode == "one_shot" and not self.one_shot_size:
            raise SstkitError("llm2llm.mode one_shot needs one_shot_size (the final size of the LLM2LLM run it matches)")

    @property
    def rounds(self) -> int:
        """Student trainings after the first: T, one for ``one_shot``, none for ``seed_only``."""
        return {"one_shot": 1, "seed_only": 0}.get(self.mode, self.iterations)


class Llm2LlmLoop:
    """Runs the loop over ``<workdir>/iter<i>/`` folders (see the module doc)."""

    def __init__(self, student: Student, teacher: Teacher | None, config: LoopConfig, workdir: Path) -> None:
        if teacher is None and config.mode != "seed_only":
            raise SstkitError(f"llm2llm.mode {config.mode} needs a teacher")
        self.student, self.teacher, self.config, self.workdir = student, teacher, config, Path(workdir)
        self.calls = 0  # teacher calls made by this process (bounded-retry checks)

    def folder(self, iteration: int) -> Path:
        return self.workdir / f"iter{iteration}"

    def run(self, seeds: Sequence[Example]) -> list[dict[str, Any]]:
        """Runs (or finishes) every iteration; returns each iteration's state."""
        if not seeds or not all(e.is_seed for e in seeds):
            raise SstkitError("llm2llm: the seed data must be a non-empty list of seed examples")
        dataset, history, previous = list(seeds), [], None
        for i in range(self.config.rounds + 1):
            state_file = self.folder(i) / "state.json"
            if state_file.is_file():
                state = json.loads(state_file.read_text())
                dataset = load_jsonl(self.folder(i) / "examples.jsonl") + load_jsonl(self.folder(i) / "new.jsonl")
            else:
                state = self.iteration(i, dataset, previous)
                dataset = dataset + load_jsonl(self.folder(i) / "new.jsonl")
            previous = state
            history.append(state)
        return history

    def iteration(self, i: int, dataset: list[Example], previous: dict[str, Any] | None) -> dict[str, Any]:
        """Trains (or reuses) the student on D_i = ``dataset``, finds W_i, augments; ``previous``: i-1's state."""
        folder = self.folder(i)
        train_file = write_examples(folder, dataset, self.config.header)
        student_file = folder / "student.json"
        if student_file.is_file():
            record = json.loads(student_file.read_text())
        elif previous is not None and previous["added"] == 0 and self.config.mode != "continued":
            # Same data, same seed, same base weights: retraining would give the same student again.
            record = {**previous["student"], "reused_from_iteration": previous["iteration"]}
            atomic_write(student_file, json.dumps(record, indent=2))
        else:
            last = previous["student"] if previous is not None else None
            init = last if self.config.mode == "continued" else None
            record = self.student.train(i, train_file, init)
            predictions = self.student.predict(record, dataset)
            if len(predictions) != len(dataset):
                raise SstkitError(f"llm2llm: the student predicted {len(predictions)} labels for {len(dataset)} examples")
            record["wrong"] = [e.id for e, p in zip(dataset, predictions, strict=True) if int(p) != e.label]
            atomic_write(student_file, json.dumps(record, indent=2))
            release = getattr(self.student, "release", None)
            # Continued fine-tuning starts from this run's weights next: free the one before, now that this
            # iteration's result is on disk (a crash before this line can still retrain from it).
            done = last if self.config.mode == "continued" else record
            if callable(release) and done is not None:
                release(done)
        wrong_ids = set(record["wrong"])
        wrong = [e for e in dataset if e.id in wrong_ids and e.is_seed]
        parents = self.parents(i, dataset, wrong)
        new = self.augment(i, dataset, parents) if i < self.config.rounds else []
        save_jsonl(folder / "new.jsonl", new)
        state = {"iteration": i, "mode": self.config.mode, "dataset_size": len(dataset),
                 "synthetic": sum(not e.is_seed for e in dataset), "wrong_seeds": len(wrong),
                 "wrong_total": len(wrong_ids), "parents": [e.id for e in parents], "added": len(new),
                 "student": record, "config": asdict(self.config)}
        atomic_write(folder / "state.json", json.dumps(state, indent=2))
        return state

    def parents(self, i: int, dataset: list[Example], wrong: list[Example]) -> list[Example]:
        """The seed examples to augment in iteration i: W_i, or as many random seeds for ``random``."""
        if self.config.mode != "random":
            return wrong
        seeds = [e for e in dataset if e.is_seed]
        return random.Random(f"{self.config.seed}:random:{i}").sample(seeds, len(wrong))

    def augment(self, i: int, dataset: list[Example], parents: list[Example]) -> list[Example]:
        """New examples for ``parents`` (label-checked, deduplicated, bounded retries)."""
        config = self.config
        wanted = {p.id: config.per_example for p in parents}
        if config.mode == "one_shot" and parents:
            total = max(0, config.one_shot_size - len(dataset))
            # Spread the total over W_0 as evenly as possible, first parents first.
            wanted = {p.id: total // len(parents) + (k < total % len(parents)) for k, p in enumerate(parents)}
        dedup = NearDuplicateFilter([e.text for e in dataset], config.dedup_threshold)
        seen = {e.text for e in dataset}
        kept: dict[str, list[Example]] = {p.id: [] for p in parents}
        for attempt in range(config.max_attempts):
            requests = [Request(p, wanted[p.id] - len(kept[p.id]), i + 1, attempt)
                        for p in parents if len(kept[p.id]) < wanted[p.id]]
            if not requests:
                break
            self.calls += len(requests)
            answers = self.teacher.generate(requests, seen)
            if len(answers) != len(requests):
                raise SstkitError(f"teacher {self.teacher.name} answered {len(answers)} of {len(requests)} requests")
            for request, candidates in zip(requests, answers, strict=True):
                parent, mine = request.parent, kept[request.parent.id]
                for text, label in candidates:
                    text = clean_text(text)
                    seen.add(text)
                    if len(mine) >= wanted[parent.id] or int(label) != parent.label or not dedup.add(text):
                        continue
                    mine.append(Example(f"{i + 1}.{parent.id}.{len(mine)}", text, parent.label,
                                        self.teacher.name, i + 1, parent.id))
        return [e for p in parents for e in kept[p.id]]


def history_table(history: Sequence[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """One row per iteration: dataset size, wrong seeds, added examples and the student's ``metric``."""
    return [{"iteration": s["iteration"], "dataset_size": s["dataset_size"], "wrong_seeds": s["wrong_seeds"],
             "added": s["added"], metric: s["student"].get("metrics", {}).get(metric)} for s in history]
