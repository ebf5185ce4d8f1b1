"""The LLM2LLM loop (Lee et al., 2024) and its baselines, resumable after a crash at any point.

With seed data D_0, iteration i = 0, 1, …, T:

1. train the student on D_i — from the base weights (``llm2llm``), or from iteration i-1's weights
   (``continued``, the paper's ablation);
2. predict D_i with it (greedy) and keep W_i = the *seed* examples it gets wrong (synthetic ones are never
   augmented again);
3. ask the teacher for n new examples like each w in W_i, drop those whose label differs from w's or whose
   ROUGE-L with any example seen so far exceeds 0.95, retry a request at most ``max_attempts`` times;
4. D_{i+1} = D_i ∪ new.

Baselines: ``seed_only`` trains on D_0 only; ``random`` augments seed examples drawn at random instead of W_i
(non-targeted): as many as its own student got wrong, or, with ``match_sizes`` (the dataset sizes of a finished
LLM2LLM run), exactly as many new examples per round as that run added — equal size per iteration and in total;
``one_shot`` augments W_0 once up to the final size of a finished LLM2LLM run (``one_shot_size``) and trains once
more. Size-matched rounds spread the missing examples over the parents that still yield new ones, so a parent whose
edits all collide with existing examples does not leave the baseline short; each parent is dropped after
``max_attempts`` calls in a row that add nothing, so the teacher calls stay bounded (at most the target plus
``max_attempts`` per parent).

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
        match_sizes: ``random`` only: D_1, …, D_T's sizes in a finished LLM2LLM run, matched round by round.
        check_labels: a new example must have its parent's label (classification); off for a generation task,
            where each new question comes with its own answer.
        seed: fixes the teacher's and the ``random`` baseline's choices.
    """

    mode: str = "llm2llm"
    iterations: int = 3
    per_example: int = 2
    max_attempts: int = 3
    dedup_threshold: float = 0.95
    one_shot_size: int | None = None
    match_sizes: tuple[int, ...] | None = None
    check_labels: bool = True
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
        if self.match_sizes is not None:
            self.match_sizes = tuple(int(n) for n in self.match_sizes)
            if self.mode != "random":
                raise SstkitError(f"llm2llm.match_sizes is for mode random only, not {self.mode!r}")
            if len(self.match_sizes) < self.iterations:
                raise SstkitError(f"llm2llm.match_sizes: {len(self.match_sizes)} sizes for {self.iterations} "
                                  "iterations (the LLM2LLM run it matches has fewer iterations)")

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
        self.asked: list[str] = []  # the parents the teacher was asked about in the current round

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
            record["wrong"] = [e.id for e, p in zip(dataset, predictions, strict=True) if not same_label(p, e.label)]
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
        self.asked: list[str] = []
        new = self.augment(i, dataset, parents) if i < self.config.rounds else []
        save_jsonl(folder / "new.jsonl", new)
        state = {"iteration": i, "mode": self.config.mode, "dataset_size": len(dataset),
                 "synthetic": sum(not e.is_seed for e in dataset), "wrong_seeds": len(wrong),
                 "wrong_total": len(wrong_ids), "parents": self.asked, "added": len(new),
                 "target_added": self.target(i, dataset),
                 "student": record, "config": asdict(self.config)}
        atomic_write(folder / "state.json", json.dumps(state, indent=2))
        return state

    def target(self, i: int, dataset: list[Example]) -> int | None:
        """How many examples round i must add in a size-matched baseline (None: n per parent, or the last round)."""
        if i >= self.config.rounds:
            return None
        if self.config.mode == "one_shot":
            return max(0, int(self.config.one_shot_size or 0) - len(dataset))
        if self.config.mode == "random" and self.config.match_sizes is not None:
            return max(0, self.config.match_sizes[i] - len(dataset))
        return None

    def parents(self, i: int, dataset: list[Example], wrong: list[Example]) -> list[Example]:
        """The seed examples to augment in iteration i: W_i, or random seeds for ``random``.

        Random parents are a seeded shuffle of all seeds: the first |W_i| (or, size-matched, ceil(target / n)) of
        them, the rest in reserve for when those stop yielding new examples.
        """
        if self.config.mode != "random":
            return wrong
        seeds = [e for e in dataset if e.is_seed]
        order = random.Random(f"{self.config.seed}:random:{i}").sample(seeds, len(seeds))
        target = self.target(i, dataset)
        if target is None:
            return order[:len(wrong)]
        return order if target else []

    def augment(self, i: int, dataset: list[Example], parents: list[Example]) -> list[Example]:
        """New examples for ``parents`` (label-checked, deduplicated, bounded retries)."""
        target = self.target(i, dataset)
        dedup = NearDuplicateFilter([e.text for e in dataset], self.config.dedup_threshold)
        seen = {e.text for e in dataset}
        kept: dict[str, list[Example]] = {p.id: [] for p in parents}
        if target is None:
            wanted = {p.id: self.config.per_example for p in parents}
            for attempt in range(self.config.max_attempts):
                requests = [Request(p, wanted[p.id] - len(kept[p.id]), i + 1, attempt)
                            for p in parents if len(kept[p.id]) < wanted[p.id]]
                if not requests:
                    break
                self.ask(requests, kept, wanted, dedup, seen)
        elif parents:
            self.fill(i + 1, target, parents, kept, dedup, seen)
        return [e for p in parents for e in kept[p.id]]

    def fill(self, iteration: int, total: int, parents: list[Example], kept: dict[str, list[Example]], dedup: NearDuplicateFilter,
             seen: set[str]) -> None:
        """Adds exactly ``total`` examples if the teacher can: size-matched baselines.

        ``one_shot`` spreads the total over all of W_0; ``random`` uses ceil(total / n) parents and brings in the
        reserve when they run dry. After each round of calls the examples still missing are spread again over the
        active parents; a parent leaves after ``max_attempts`` calls in a row that added nothing.
        """
        config = self.config
        count = len(parents) if config.mode == "one_shot" else min(len(parents), -(-total // config.per_example))
        active, reserve = list(parents[:count]), list(parents[count:])
        wanted = {p.id: 0 for p in parents}
        attempts = {p.id: 0 for p in parents}  # calls per parent, the retry number of its next request
        stalls = {p.id: 0 for p in parents}
        while active:
            missing = total - sum(len(v) for v in kept.values())
            if missing <= 0:
                break
            # Spread what is missing as evenly as possible, first parents first.
            for k, p in enumerate(active):
                wanted[p.id] = len(kept[p.id]) + missing // len(active) + (k < missing % len(active))
            requests = [Request(p, wanted[p.id] - len(kept[p.id]), iteration, attempts[p.id])
                        for p in active if wanted[p.id] > len(kept[p.id])]
            before = {p.id: len(kept[p.id]) for p in active}
            self.ask(requests, kept, wanted, dedup, seen)
            for p in active:
                attempts[p.id] += wanted[p.id] > before[p.id]
                stalls[p.id] = 0 if len(kept[p.id]) > before[p.id] else stalls[p.id] + (wanted[p.id] > before[p.id])
            dry = [p for p in active if stalls[p.id] >= config.max_attempts]
            active = [p for p in active if stalls[p.id] < config.max_attempts]
            while dry and reserve:  # random: a fresh random seed for each one that ran dry
                dry.pop()
                active.append(reserve.pop(0))

    def ask(self, requests: list[Request], kept: dict[str, list[Example]], wanted: dict[str, int],
            dedup: NearDuplicateFilter, seen: set[str]) -> None:
        """One teacher call for ``requests``; keeps each parent's new, label-checked, non-duplicate candidates."""
        self.calls += len(requests)
        answers = self.teacher.generate(requests, seen)
        if len(answers) != len(requests):
            raise SstkitError(f"teacher {self.teacher.name} answered {len(answers)} of {len(requests)} requests")
        check = self.config.check_labels
        for request, candidates in zip(requests, answers, strict=True):
            parent, mine = request.parent, kept[request.parent.id]
            if parent.id not in self.asked:
                self.asked.append(parent.id)
            for text, label in candidates:
                text = clean_text(text)
                seen.add(text)
                if len(mine) >= wanted[parent.id] or (check and not same_label(label, parent.label)):
                    continue
                if not dedup.add(text):
                    continue
                # Classes are the parent's (checked above); a generation task's answer is the new question's own.
                new_label = parent.label if check else (clean_text(label) if isinstance(label, str) else label)
                mine.append(Example(f"{request.iteration}.{parent.id}.{len(mine)}", text, new_label,
                                    self.teacher.name, request.iteration, parent.id))


def same_label(a: Any, b: Any) -> bool:
    """Class labels compare as integers, a generation task's answers as whitespace-normalised text."""
    if isinstance(a, str) or isinstance(b, str):
        return " ".join(str(a).split()) == " ".join(str(b).split())
    return int(a) == int(b)


def history_table(history: Sequence[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """One row per iteration: dataset size, wrong seeds, added examples and the student's ``metric``."""
    return [{"iteration": s["iteration"], "dataset_size": s["dataset_size"], "wrong_seeds": s["wrong_seeds"],
             "added": s["added"], metric: s["student"].get("metrics", {}).get(metric)} for s in history]
