"""LLM2LLM's dataset: examples with provenance, their files per iteration, and ROUGE-L near-duplicate filtering.

Every example carries where it came from (``source``: ``seed`` or the teacher's name, the ``iteration`` that
added it, the ``parent`` seed id), so the loop can augment only seed examples and a table can count what each
teacher added. An iteration's dataset is written as ``train.tsv`` (what a text-classification DataModule reads)
and ``examples.jsonl`` (the same rows with provenance, which resuming reads back).

ROUGE-L is computed here with a token LCS rather than the ``rouge-score`` package: that package is not
installable offline on the machines sstkit targets, and only its F-measure on whitespace tokens is needed.

Example:
    >>> rouge_l("the film is great", "the film is really great")
    0.888...
    >>> dedup = NearDuplicateFilter(["a fine movie"], threshold=0.95)
    >>> dedup.add("a fine movie"), dedup.add("a bad movie")
    (False, True)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from sstkit.errors import DataError

SEED = "seed"
_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class Example:
    """One labelled text and its provenance.

    Args:
        id: unique within a run: ``s<k>`` for seed k, ``<iteration>.<parent>.<k>`` for generated ones.
        text: the input text.
        label: integer class, or the answer text of a generation task.
        source: ``seed`` or the name of the teacher that wrote it.
        iteration: the iteration whose teacher call added it (0 for seeds).
        parent: the seed example it was made from (None for seeds).
    """

    id: str
    text: str
    label: int | str
    source: str = SEED
    iteration: int = 0
    parent: str | None = None

    @property
    def is_seed(self) -> bool:
        return self.source == SEED


def seed_examples(texts: Sequence[str], labels: Sequence[int | str]) -> list[Example]:
    """Seed examples ``s0, s1, …`` in the given order (labels: classes, or a generation task's answers)."""
    return [Example(f"s{k}", t, y if isinstance(y, str) else int(y))
            for k, (t, y) in enumerate(zip(texts, labels, strict=True))]


def atomic_write(path: Path, text: str) -> None:
    # A crash while writing must leave the old file or the new one, never half of one.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def clean_text(text: str) -> str:
    """One line without tabs, so a TSV row stays ``text<TAB>label``."""
    return " ".join(text.replace("\t", " ").split())


def write_examples(folder: Path, examples: Sequence[Example], header: Sequence[str] = ("sentence", "label"),
                   name: str = "train") -> Path:
    """Writes ``<name>.tsv`` and, for the training set, ``examples.jsonl`` into ``folder``; returns the TSV's path."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["\t".join(header)] + [f"{clean_text(e.text)}\t{clean_text(str(e.label))}" for e in examples]
    if name == "train":
        atomic_write(folder / "examples.jsonl", "".join(json.dumps(asdict(e)) + "\n" for e in examples))
    atomic_write(folder / f"{name}.tsv", "\n".join(rows) + "\n")
    return folder / f"{name}.tsv"


def save_jsonl(path: Path, examples: Iterable[Example]) -> None:
    """Examples as JSON lines (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, "".join(json.dumps(asdict(e)) + "\n" for e in examples))


def load_jsonl(path: Path) -> list[Example]:
    """Examples written by :func:`save_jsonl` / :func:`write_examples`; a bad line is named."""
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(Example(**json.loads(line)))
        except (TypeError, ValueError) as err:
            raise DataError(path, f"not an LLM2LLM example record ({err})", lineno) from None
    return out


def tokens(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens."""
    return _TOKEN.findall(text.lower())


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, start=1):
            cur = row[j]
            row[j] = prev + 1 if x == y else max(row[j], row[j - 1])
            prev = cur
    return row[-1]


def rouge_l(a: str | Sequence[str], b: str | Sequence[str]) -> float:
    """ROUGE-L F-measure (β = 1) of two texts: 2·LCS / (|a| + |b|) on tokens."""
    ta = tokens(a) if isinstance(a, str) else list(a)
    tb = tokens(b) if isinstance(b, str) else list(b)
    if not ta or not tb:
        return float(ta == tb)
    return 2 * _lcs(ta, tb) / (len(ta) + len(tb))


class NearDuplicateFilter:
    """Accepts a text only if its ROUGE-L with every text seen so far is at most ``threshold``.

    The paper (and its code) drops a generated example whose ROUGE-L against an existing one exceeds 0.95.
    Pairs whose lengths alone cap the F-measure below the threshold are skipped without an LCS.
    """

    def __init__(self, texts: Iterable[str] = (), threshold: float = 0.95) -> None:
        self.threshold = threshold
        self.seen: list[list[str]] = []
        for text in texts:
            self.seen.append(tokens(text))

    def is_duplicate(self, text: str) -> bool:
        new = tokens(text)
        n = len(new)
        for old in self.seen:
            # F ≤ 2·min / (|a| + |b|): most pairs are ruled out by length.
            if 2 * min(n, len(old)) / max(n + len(old), 1) <= self.threshold:
                continue
            if rouge_l(new, old) > self.threshold:
                return True
        return False

    def add(self, text: str) -> bool:
        """Records ``text`` and returns True unless it is a near-duplicate (then nothing is recorded)."""
        if not tokens(text) or self.is_duplicate(text):
            return False
        self.seen.append(tokens(text))
        return True
