"""LLM2LLM with a generation student: the arithmetic task and its teacher, the prompt/answer data, the loop on
answers instead of classes, and ``sstkit llm2llm`` end to end with a tiny random OPT."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from support import run_main

from sstkit.errors import DataError, SstkitError
from sstkit.functional.llm2llm import Example, Llm2LlmLoop, LoopConfig, Request, load_jsonl, seed_examples
from sstkit.functional.llm2llm.arithmetic import TEMPLATES, TemplateTeacher, answer, make_problems, parse


def test_problems_have_their_computed_answers_and_the_teacher_keeps_the_template() -> None:
    problems = make_problems(40, seed=3)
    assert len({q for q, _ in problems}) == 40 and problems == make_problems(40, seed=3)
    assert all(answer(q) == a for q, a in problems)
    assert {parse(q)[0].name for q, _ in problems} == {t.name for t in TEMPLATES}
    question, result = next(p for p in problems if parse(p[0])[0].name == "sub")
    parent = Example("s0", question, result)
    teacher = TemplateTeacher(spread=1, seed=0)
    out = teacher.generate([Request(parent, 5, 1)])[0]
    assert out == teacher.generate([Request(parent, 5, 1)])[0] and len(out) == 5
    fields = parse(question)[1]
    for text, value in out:
        template, new = parse(text)
        assert template.name == "sub" and answer(text) == value and int(value) >= 0
        assert abs(int(new["a"]) - int(fields["a"])) <= 1 and abs(int(new["b"]) - int(fields["b"])) <= 1
    assert teacher.generate([Request(Example("s1", "not a templated problem", "3"), 2, 1)]) == [[]]


def test_prompt_answer_data_masks_the_prompt(tmp_path: Path) -> None:
    from sstkit.datamodules import PromptAnswerDataModule

    rows = ["question\tanswer"] + [f"{q}\t{a}" for q, a in make_problems(30)]
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n")
    data = PromptAnswerDataModule(data_dir=str(tmp_path), train_file="train.tsv", val_file=None, test_file=None,
                                  header=["question", "answer"], bpe_vocab_size=300, batch_size=4)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    for row in range(4):
        ids, labels = batch["input_ids"][row], batch["labels"][row]
        kept = labels[labels != -100].tolist()
        text = data.tokenizer.decode(kept, skip_special_tokens=True)
        assert kept[-1] == data.tokenizer.eos_token_id and text.strip().isdigit()  # the answer, then </s>
        n = int(batch["attention_mask"][row].sum())
        assert ids[:n].tolist()[-len(kept):] == kept and (labels[n:] == -100).all()
    (tmp_path / "bad.tsv").write_text("question\tanswer\nno answer here\n")
    with pytest.raises(DataError, match="bad.tsv:2"):
        PromptAnswerDataModule(data_dir=str(tmp_path), train_file="bad.tsv", val_file=None, test_file=None,
                               header=["question", "answer"]).check_data()


class Calculator:
    """A student that answers every problem right except those in ``wrong`` (it answers 0 to those)."""

    def __init__(self, wrong: set[str]) -> None:
        self.wrong = wrong

    def train(self, iteration: int, train_file: Path, init_from: dict | None) -> dict:
        return {"run": f"run{iteration}", "metrics": {}}

    def predict(self, record: dict, examples: Sequence[Example]) -> list[str]:
        return ["0" if e.id in self.wrong else answer(e.text) for e in examples]


def test_loop_on_answers_keeps_each_new_question_with_its_own_answer(tmp_path: Path) -> None:
    seeds = seed_examples(*zip(*make_problems(6), strict=True))
    history = Llm2LlmLoop(Calculator({"s1", "s2"}), TemplateTeacher(), LoopConfig(iterations=1, per_example=3,
                          check_labels=False), tmp_path).run(seeds)
    assert history[0]["wrong_seeds"] == 2 and history[0]["added"] == 6
    new = [e for e in load_jsonl(tmp_path / "iter1" / "examples.jsonl") if not e.is_seed]
    assert {e.parent for e in new} == {"s1", "s2"} and all(e.label == answer(e.text) for e in new)
    # With label checking on (classification), answers that differ from the parent's are dropped.
    history = Llm2LlmLoop(Calculator({"s1"}), TemplateTeacher(), LoopConfig(iterations=1, per_example=3),
                          tmp_path / "checked").run(seeds)
    added = [e for e in load_jsonl(tmp_path / "checked" / "iter1" / "examples.jsonl") if not e.is_seed]
    assert all(e.label == seeds[1].label for e in added)


def test_command_runs_a_generation_student_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from sstkit.cli import main

    student = yaml.safe_load((REPO / "configs/opt/arithmetic/sft.yaml").read_text())
    student["trainer"].update(max_epochs=None, max_steps=3, enable_progress_bar=False)
    student["data"]["init_args"]["bpe_vocab_size"] = 300
    student_file = tmp_path / "student.yaml"
    student_file.write_text(yaml.safe_dump(student))
    config = yaml.safe_load((REPO / "configs/llm2llm/arithmetic/template.yaml").read_text())
    config["data"].update(generator_sizes=[60, 5, 12], seed_examples=10)
    config["student"]["config"] = str(student_file)
    config["llm2llm"].update(iterations=1, per_example=1)
    work = run_main(tmp_path, "llm2llm", config) / "llm2llm-arithmetic-llm2llm" / "seed0"
    states = [json.loads((work / f"iter{i}" / "state.json").read_text()) for i in (0, 1)]
    assert states[0]["wrong_seeds"] == len(states[0]["parents"]) > 0  # a 3-step random model gets most wrong
    assert states[1]["dataset_size"] == 10 + states[0]["added"]
    run = Path(states[1]["student"]["run"])
    answers = [json.loads(line) for line in (run / "test_answers.jsonl").read_text().splitlines()]
    assert len(answers) == 12 and states[1]["student"]["metrics"]["test/exact_match"] == pytest.approx(
        sum(a["correct"] for a in answers) / 12)
    assert "test/loss" in json.loads((run / "summary.json").read_text())["metrics"]
    assert (tmp_path / "runs" / "llm2llm-arithmetic-task" / "test.tsv").read_text().count("\n") == 13
    capsys.readouterr()
    args = ["llm2llm", "--config", str(tmp_path / "llm2llm.yaml"), "--run_root", str(tmp_path / "runs")]
    with pytest.raises(SystemExit) as bad:
        main([*args, "--set", "teacher.kind=rule"])
    assert bad.value.code == 2 and "cannot teach a generation student" in capsys.readouterr().err


def test_generated_task_settings_are_checked(tmp_path: Path) -> None:
    from sstkit.commands.llm2llm_generation import write_generated_task

    data = {"generator": "arithmetic", "generator_sizes": [5, 2, 3], "header": ["question", "answer"]}
    out = write_generated_task(data, tmp_path)
    assert out["train_file"] == "train.tsv" and (tmp_path / "dev.tsv").read_text().count("\n") == 3
    with pytest.raises(SstkitError, match="data.generator must be one of"):
        write_generated_task({**data, "generator": "gsm8k"}, tmp_path)
    with pytest.raises(SstkitError, match="generator_sizes: expected three"):
        write_generated_task({**data, "generator_sizes": [5, 2]}, tmp_path)
