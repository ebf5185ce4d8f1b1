"""LLM2LLM: the loop with a fake student and scripted teachers (fast), the teachers, and the command end to end
with a tiny random BERT student."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, tiny_config
from support import run_main

from sstkit.errors import SstkitError
from sstkit.functional.llm2llm import (
    ChatTeacher,
    Example,
    Llm2LlmLoop,
    LoopConfig,
    NearDuplicateFilter,
    Request,
    RetrievalTeacher,
    RuleTeacher,
    load_jsonl,
    parse_reply,
    rouge_l,
    seed_examples,
)
from sstkit.functional.llm2llm.teachers import DictLexicon
from sstkit.generation import Generation

SEEDS = seed_examples([f"seed sentence number {k} about a film" for k in range(6)], [k % 2 for k in range(6)])


class FakeStudent:
    """Gets an example wrong when its id is in ``wrong`` (or every example, ``wrong=None``); records its calls."""

    def __init__(self, wrong: set[str] | None = None, crash_at: int | None = None) -> None:
        self.wrong, self.crash_at = wrong, crash_at
        self.trained: list[tuple[int, list[str], dict | None]] = []
        self.predicted: list[list[str]] = []

    def train(self, iteration: int, train_file: Path, init_from: dict | None) -> dict:
        if iteration == self.crash_at:
            self.crash_at = None
            raise RuntimeError("killed while training")
        rows = train_file.read_text().splitlines()[1:]
        self.trained.append((iteration, rows, init_from))
        return {"run": f"run{iteration}", "metrics": {"test/acc": 0.5 + 0.1 * iteration}}

    def predict(self, record: dict, examples: Sequence[Example]) -> list[int]:
        self.predicted.append([e.id for e in examples])
        return [1 - e.label if self.wrong is None or e.id in self.wrong else e.label for e in examples]


class ScriptedTeacher:
    """Returns ``<parent text> v<iteration>.<attempt>.<k>`` for each request; ``crash_at`` raises once."""

    name = "scripted"

    def __init__(self, crash_at: int | None = None) -> None:
        self.crash_at = crash_at
        self.requests: list[Request] = []

    def generate(self, requests: Sequence[Request], existing: Collection[str] = ()) -> list[list[tuple[str, int]]]:
        if requests and requests[0].iteration == self.crash_at:
            self.crash_at = None
            raise RuntimeError("killed while generating")
        self.requests += requests
        return [[(f"{r.parent.text} v{r.iteration}.{r.attempt}.{k}", r.parent.label) for k in range(r.n)]
                for r in requests]


def dataset(workdir: Path, i: int) -> list[Example]:
    return load_jsonl(workdir / f"iter{i}" / "examples.jsonl")


def test_scripted_teacher_gives_an_exactly_predictable_dataset_sequence(tmp_path: Path) -> None:
    student = FakeStudent(wrong={"s1", "s4"})
    history = Llm2LlmLoop(student, ScriptedTeacher(), LoopConfig(iterations=2, per_example=2), tmp_path).run(SEEDS)
    new1 = [("1.s1.0", "seed sentence number 1 about a film v1.0.0"), ("1.s1.1", "seed sentence number 1 about a film v1.0.1"),
            ("1.s4.0", "seed sentence number 4 about a film v1.0.0"), ("1.s4.1", "seed sentence number 4 about a film v1.0.1")]
    assert [(e.id, e.text) for e in dataset(tmp_path, 1)[6:]] == new1
    assert [e.id for e in dataset(tmp_path, 2)] == [e.id for e in SEEDS] + [i for i, _ in new1] + [
        "2.s1.0", "2.s1.1", "2.s4.0", "2.s4.1"]
    assert dataset(tmp_path, 2)[-1] == Example("2.s4.1", "seed sentence number 4 about a film v2.0.1", 0, "scripted", 2, "s4")
    assert [s["dataset_size"] for s in history] == [6, 10, 14] and [s["added"] for s in history] == [4, 4, 0]
    # The TSV the student reads is the examples file's text and labels.
    assert student.trained[1][1] == [f"{e.text}\t{e.label}" for e in dataset(tmp_path, 1)]


def test_only_seed_examples_are_augmented_and_wrong_set_is_own_training_data(tmp_path: Path) -> None:
    student, teacher = FakeStudent(wrong=None), ScriptedTeacher()  # gets everything wrong, synthetic ones too
    history = Llm2LlmLoop(student, teacher, LoopConfig(iterations=3, per_example=1), tmp_path).run(SEEDS)
    assert {r.parent.id for r in teacher.requests} == {e.id for e in SEEDS}
    assert all(r.parent.is_seed for r in teacher.requests)
    for i, state in enumerate(history):
        assert student.predicted[i] == [e.id for e in dataset(tmp_path, i)]  # predicted on exactly D_i
        assert state["wrong_total"] == state["dataset_size"] and state["wrong_seeds"] == len(SEEDS)
    assert all(e.parent in {s.id for s in SEEDS} for e in dataset(tmp_path, 3) if not e.is_seed)


def test_dedup_removes_a_planted_near_duplicate(tmp_path: Path) -> None:
    long = " ".join(f"word{k}" for k in range(40))
    near = long.replace("word20", "other")  # ROUGE-L 39·2/80 = 0.975 > 0.95
    assert rouge_l(long, near) == pytest.approx(0.975)
    seeds = seed_examples([long, "a short different one"], [1, 0])

    class Planting(ScriptedTeacher):
        def generate(self, requests, existing=()):
            return [[(near, 1), ("a brand new sentence about cinema", 1)] for _ in requests]

    Llm2LlmLoop(FakeStudent(wrong={"s0"}), Planting(), LoopConfig(iterations=1, per_example=2), tmp_path).run(seeds)
    added = [e.text for e in dataset(tmp_path, 1) if not e.is_seed]
    assert added == ["a brand new sentence about cinema"]
    dedup = NearDuplicateFilter([long])
    assert not dedup.add(near) and dedup.add("something else entirely") and not dedup.add("something else entirely")


def test_retries_are_bounded_and_labels_checked(tmp_path: Path) -> None:
    class Useless(ScriptedTeacher):
        def generate(self, requests, existing=()):
            self.requests += requests
            return [[(r.parent.text, r.parent.label), ("flipped label", 1 - r.parent.label)] for r in requests]

    teacher = Useless()
    loop = Llm2LlmLoop(FakeStudent(wrong={"s0", "s1"}), teacher, LoopConfig(iterations=1, max_attempts=3), tmp_path)
    history = loop.run(SEEDS)
    assert loop.calls == 2 * 3 and len(teacher.requests) == 6  # two parents, three attempts each, then give up
    assert [r.attempt for r in teacher.requests] == [0, 0, 1, 1, 2, 2]
    assert history[0]["added"] == 0


@pytest.mark.parametrize("crash", ["teacher", "student"])
def test_crash_mid_iteration_resumes_without_duplicates(tmp_path: Path, crash: str) -> None:
    reference = tmp_path / "reference"
    Llm2LlmLoop(FakeStudent(wrong={"s2", "s3"}), ScriptedTeacher(), LoopConfig(iterations=3), reference).run(SEEDS)
    work = tmp_path / "crashed"
    student = FakeStudent(wrong={"s2", "s3"}, crash_at=2 if crash == "student" else None)
    teacher = ScriptedTeacher(crash_at=2 if crash == "teacher" else None)  # the call that builds D_2
    with pytest.raises(RuntimeError, match="killed"):
        Llm2LlmLoop(student, teacher, LoopConfig(iterations=3), work).run(SEEDS)
    assert not (work / "iter1" / "state.json").is_file() if crash == "teacher" else True
    Llm2LlmLoop(student, teacher, LoopConfig(iterations=3), work).run(SEEDS)
    final = dataset(work, 3)
    assert final == dataset(reference, 3)
    assert len({e.id for e in final}) == len(final) and len({e.text for e in final}) == len(final)
    trained = [i for i, _, _ in student.trained]
    assert trained == [0, 1, 2, 3]  # a finished student step is never repeated


def test_nothing_added_reuses_the_student_instead_of_retraining(tmp_path: Path) -> None:
    student = FakeStudent(wrong=set())
    history = Llm2LlmLoop(student, ScriptedTeacher(), LoopConfig(iterations=2), tmp_path).run(SEEDS)
    assert [i for i, _, _ in student.trained] == [0] and [s["dataset_size"] for s in history] == [6, 6, 6]
    assert history[2]["student"]["reused_from_iteration"] == 1 and history[2]["student"]["run"] == "run0"


def test_baselines(tmp_path: Path) -> None:
    wrong = {"s0", "s5"}
    student = FakeStudent(wrong=wrong)
    Llm2LlmLoop(student, ScriptedTeacher(), LoopConfig(mode="continued", iterations=2), tmp_path / "c").run(SEEDS)
    assert [init for _, _, init in student.trained] == [None, {"run": "run0", "metrics": {"test/acc": 0.5},
                                                                "wrong": ["s0", "s5"]}, student.trained[2][2]]
    assert student.trained[2][2]["run"] == "run1"
    teacher = ScriptedTeacher()
    history = Llm2LlmLoop(FakeStudent(wrong=wrong), teacher, LoopConfig(mode="random", iterations=2, seed=3),
                          tmp_path / "r").run(SEEDS)
    assert [len(s["parents"]) for s in history[:2]] == [2, 2]  # as many parents as wrong seeds, drawn at random
    history = Llm2LlmLoop(FakeStudent(wrong=wrong), ScriptedTeacher(), LoopConfig(mode="one_shot", one_shot_size=13),
                          tmp_path / "o").run(SEEDS)
    assert [s["dataset_size"] for s in history] == [6, 13] and history[0]["parents"] == ["s0", "s5"]
    history = Llm2LlmLoop(FakeStudent(wrong=wrong), None, LoopConfig(mode="seed_only"), tmp_path / "s").run(SEEDS)
    assert len(history) == 1 and history[0]["added"] == 0
    with pytest.raises(SstkitError, match="one_shot_size"):
        LoopConfig(mode="one_shot")
    with pytest.raises(SstkitError, match="llm2llm.mode must be one of"):
        LoopConfig(mode="iterative")


class Picky(ScriptedTeacher):
    """Yields nothing new for the parents in ``dry`` (echoes their text, which dedup drops) and one example per call
    for the others, however many were asked for."""

    def __init__(self, dry: set[str]) -> None:
        super().__init__()
        self.dry = dry

    def generate(self, requests, existing=()):
        self.requests += requests
        return [[(r.parent.text, r.parent.label)] if r.parent.id in self.dry else
                [(f"{r.parent.text} v{r.iteration}.{r.attempt}", r.parent.label)] for r in requests]


def test_size_matched_baselines_reach_the_llm2llm_sizes(tmp_path: Path) -> None:
    wrong = {"s0", "s5"}
    reference = Llm2LlmLoop(FakeStudent(wrong=wrong), ScriptedTeacher(), LoopConfig(iterations=2, per_example=2),
                            tmp_path / "l").run(SEEDS)
    sizes = [s["dataset_size"] for s in reference]
    assert sizes == [6, 10, 14]
    # Random, equal size per round and in total, although half the seeds yield nothing and the others one
    # example per call: the missing examples move to parents that still yield, dry ones are replaced.
    teacher = Picky(dry={"s1", "s2", "s3"})
    config = LoopConfig(mode="random", iterations=2, per_example=2, max_attempts=2, match_sizes=tuple(sizes[1:]))
    history = Llm2LlmLoop(FakeStudent(wrong=wrong), teacher, config, tmp_path / "r").run(SEEDS)
    assert [s["dataset_size"] for s in history] == sizes and [s["target_added"] for s in history] == [4, 4, None]
    assert all(e.parent not in teacher.dry for e in dataset(tmp_path / "r", 2) if not e.is_seed)
    assert all(r.parent.is_seed for r in teacher.requests)
    # One-shot of equal total size: W_0 = {s0, s5}; s5 yields nothing, so s0 makes up the total alone.
    teacher = Picky(dry={"s5"})
    loop = Llm2LlmLoop(FakeStudent(wrong=wrong), teacher, LoopConfig(mode="one_shot", one_shot_size=sizes[-1],
                                                                     max_attempts=3), tmp_path / "o")
    history = loop.run(SEEDS)
    assert [s["dataset_size"] for s in history] == [6, 14] and history[0]["parents"] == ["s0", "s5"]
    assert {e.parent for e in dataset(tmp_path / "o", 1) if not e.is_seed} == {"s0"}
    assert sum(r.parent.id == "s5" for r in teacher.requests) == 3  # dropped after max_attempts dry calls
    # Bounded when nothing ever comes: every seed is tried max_attempts times, then the round gives up short.
    teacher = Picky(dry={e.id for e in SEEDS})
    loop = Llm2LlmLoop(FakeStudent(wrong=wrong), teacher, config, tmp_path / "none")
    history = loop.run(SEEDS)
    assert loop.calls == 2 * len(SEEDS) * 2 and [s["added"] for s in history] == [0, 0, 0]
    with pytest.raises(SstkitError, match="match_sizes is for mode random"):
        LoopConfig(mode="llm2llm", match_sizes=(10,))
    with pytest.raises(SstkitError, match="1 sizes for 2 iterations"):
        LoopConfig(mode="random", iterations=2, match_sizes=(10,))


def test_match_from_reads_the_reference_run(tmp_path: Path) -> None:
    from sstkit.commands.llm2llm import match_reference

    for i, size in enumerate([128, 160, 190]):
        (tmp_path / f"iter{i}").mkdir()
        (tmp_path / f"iter{i}" / "state.json").write_text(json.dumps({"dataset_size": size}))
    options = {"mode": "random", "match_from": str(tmp_path)}
    match_reference(options)
    assert options == {"mode": "random", "match_sizes": [160, 190]}
    options = {"mode": "one_shot", "match_from": str(tmp_path), "one_shot_size": None}
    match_reference(options)
    assert options["one_shot_size"] == 190
    with pytest.raises(SstkitError, match="holds no finished iteration"):
        match_reference({"mode": "one_shot", "match_from": str(tmp_path / "missing")})


def test_rule_teacher_is_deterministic_and_keeps_labels() -> None:
    teacher = RuleTeacher(lexicon=DictLexicon({"good": ["fine"], "film": ["movie"]}), seed=0)
    request = Request(Example("s0", "a good film that is not dull", 1), n=5, iteration=1)
    out = teacher.generate([request])[0]
    assert out == teacher.generate([request])[0] and len(out) == 5 and {y for _, y in out} == {1}
    assert all("not" in text.split() for text, _ in out)  # negations are never deleted or replaced
    assert out != teacher.generate([Request(request.parent, 5, 1, attempt=1)])[0]


def test_retrieval_teacher_returns_nearest_unused_same_label() -> None:
    texts, labels = ["red a", "red b", "blue c", "red d"], [1, 0, 1, 1]
    vectors = {"red": [1.0, 0.0], "blue": [0.0, 1.0]}

    def embed(batch: Sequence[str]) -> torch.Tensor:
        return torch.tensor([vectors[t.split()[0]] for t in batch])

    teacher = RetrievalTeacher(texts, labels, embed)
    parent = Example("s0", "red film", 1)
    assert teacher.generate([Request(parent, 2, 1)], existing={"red a"}) == [[("red d", 1), ("blue c", 1)]]
    # A generation task's pool questions bring their own answers: any label, nearest first.
    answers = RetrievalTeacher(texts, ["1", "2", "3", "4"], embed, match_label=False)
    assert answers.generate([Request(Example("s0", "red q", "9"), 2, 1)], existing={"red a"}) == [[("red b", "2"),
                                                                                                   ("red d", "4")]]


def test_chat_teacher_prompt_parsing_and_label_check() -> None:
    assert parse_reply("Sentence: a dull film\nLabel: negative\n2. Sentence: great fun\nLabel: positive",
                       ["negative", "positive"]) == [("a dull film", 0), ("great fun", 1)]
    assert parse_reply("Sentence: no label here", ["negative", "positive"]) == []
    assert parse_reply("Sentence: no label here", ["negative", "positive"], default_label=1) == [("no label here", 1)]
    assert parse_reply("Sentence: x\nLabel: neutral", ["negative", "positive"]) == []
    assert parse_reply("Sentence: <the new sentence>\nSentence: (the new sentence)\nSentence: Sentence: [1]\n"
                       "Sentence: Sentence: The chills!", ["negative", "positive"], 0) == [("The chills!", 0)]
    assert parse_reply("Here you go:\n1. A fun ride.\n- Sweet and sharp", ["negative", "positive"], 1) == [
        ("A fun ride.", 1), ("Sweet and sharp", 1)]

    class Backend:
        name = "scripted"

        def __init__(self) -> None:
            self.prompts: list = []

        def generate(self, prompts, settings=None, system=None):
            self.prompts += prompts
            return [Generation("Sentence: a warm , funny film\nLabel: positive\nSentence: awful\nLabel: negative", 9, "eos")
                    for _ in prompts]

    backend = Backend()
    teacher = ChatTeacher(backend, ["negative", "positive"], require_label=True)
    out = teacher.generate([Request(Example("s0", "a lovely film", 1), 2, 1)])
    assert out == [[("a warm , funny film", 1), ("awful", 0)]]  # the loop drops the label-0 one
    assert "Sentence: a lovely film\nLabel: positive" in backend.prompts[0] and "2 new" in backend.prompts[0]


def test_chat_teacher_runs_a_real_chat_model() -> None:
    from chat_fixtures import tiny_chat

    from sstkit.generation import GenerationSettings

    teacher = ChatTeacher(tiny_chat(), ["negative", "positive"], settings=GenerationSettings(max_new_tokens=6))
    out = teacher.generate([Request(Example("s0", "a lovely film", 1), 1, 1)])
    assert len(out) == 1 and isinstance(teacher.replies[0], str)  # a random model writes no parsable example


@pytest.mark.parametrize("config", sorted((REPO / "configs" / "llm2llm").rglob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(config: Path) -> None:
    from sstkit.commands.config_file import load_config
    from sstkit.commands.llm2llm import TEACHERS

    assert config.read_text().startswith(f"# sstkit llm2llm --config {config.relative_to(REPO)}")
    loaded = load_config(str(config), [], sections=())
    LoopConfig(**loaded["llm2llm"])
    assert (REPO / loaded["student"]["config"]).is_file() and loaded["teacher"]["kind"] in TEACHERS


def test_command_end_to_end_with_a_tiny_student(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from sstkit.cli import main

    student = tiny_config(data_dir, max_steps=2)
    student_file = tmp_path / "student.yaml"
    student_file.write_text(yaml.safe_dump(student))
    config = {"name": "tiny", "data": {"data_dir": str(data_dir), "seed_examples": 8, "pool_size": 20, "test_samples": 10},
              "student": {"config": str(student_file)}, "teacher": {"kind": "rule"},
              "llm2llm": {"iterations": 1, "per_example": 1}}
    runs = run_main(tmp_path, "llm2llm", config)
    args = ["llm2llm", "--config", str(tmp_path / "llm2llm.yaml"), "--run_root", str(runs)]
    workdir = runs / "tiny-llm2llm" / "seed0"
    state = json.loads((workdir / "iter1" / "state.json").read_text())
    summary = json.loads((tmp_path / "runs" / "tiny-llm2llm-iter1" / "seed0" / "summary.json").read_text())
    assert state["dataset_size"] == 8 + json.loads((workdir / "iter0" / "state.json").read_text())["added"]
    assert "test/acc" in summary["metrics"] and state["student"]["metrics"]["test/acc"] == summary["metrics"]["test/acc"]
    assert len((workdir / "test10.tsv").read_text().splitlines()) == 11  # header + the first 10 test rows
    capsys.readouterr()
    with pytest.raises(SystemExit) as bad:
        main([*args, "--set", "teacher.kind=oracle"])
    assert bad.value.code == 2 and "teacher.kind must be one of" in capsys.readouterr().err


def test_teacher_section_may_keep_other_kinds_settings_but_no_unknown_key() -> None:
    from sstkit.commands.llm2llm import build_teacher

    teacher = build_teacher({"kind": "rule", "edit_rate": 0.3, "model": "smollm2"}, {}, ([], []), seed=0)
    assert isinstance(teacher, RuleTeacher) and teacher.edit_rate == 0.3
    with pytest.raises(SstkitError, match="teacher.edit: unknown key"):
        build_teacher({"kind": "rule", "edit": 0.3}, {}, ([], []), seed=0)


@pytest.mark.parametrize("mode", ["llm2llm", "continued"])
def test_checkpoints_are_released_only_when_no_later_step_needs_them(tmp_path: Path, mode: str) -> None:
    released: list[str] = []

    class Releasing(FakeStudent):
        def train(self, iteration, train_file, init_from):
            if init_from is not None:
                assert init_from["run"] not in released  # continued fine-tuning still finds its start
            return super().train(iteration, train_file, init_from)

        def release(self, record):
            released.append(record["run"])

    Llm2LlmLoop(Releasing(wrong={"s0"}), ScriptedTeacher(), LoopConfig(mode=mode, iterations=2), tmp_path).run(SEEDS)
    assert released == (["run0", "run1"] if mode == "continued" else ["run0", "run1", "run2"])
