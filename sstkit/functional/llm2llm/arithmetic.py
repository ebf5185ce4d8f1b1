"""Procedural arithmetic word problems (GSM-style, one step) and a teacher that writes new ones like a given one.

A generation task whose answers can be checked, built offline: each problem comes from a template (a sentence
with a name, an item and two numbers) and its answer is computed, so a student's greedy answer is right or wrong
exactly. :class:`TemplateTeacher` is LLM2LLM's teacher for it: asked for problems similar to one the student got
wrong, it re-instantiates that problem's template with nearby numbers and another name and item, and computes
the new answers (a perfect teacher: every example it writes is correct, as a retrieval teacher's are).

Example:
    >>> problems = make_problems(3, seed=0)
    >>> len(problems), all(answer(q) == a for q, a in problems)
    (3, True)
    >>> parse("Ann has 3 pens and buys 4 more. How many pens does Ann have now?")[0].name
    'add'
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from sstkit.functional.llm2llm.teachers import Candidate, Request, request_rng

NAMES = ("Ann", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kim", "Lea")
ITEMS = ("apples", "pens", "books", "coins", "cards", "shells", "stamps", "marbles")


@dataclass(frozen=True)
class Template:
    """A problem shape: ``text`` with ``{name}``, ``{item}``, ``{a}``, ``{b}``; ``solve(a, b)`` is the answer.

    ``valid(a, b)`` says which number pairs make a sensible problem (no negative counts, whole shares).
    """

    name: str
    text: str
    solve: Callable[[int, int], int]
    valid: Callable[[int, int], bool] = lambda a, b: True

    @property
    def pattern(self) -> re.Pattern[str]:
        escaped = re.escape(self.text)
        for field, group in (("name", r"(?P<name>[A-Z][a-z]+)"), ("item", r"(?P<item>[a-z]+)"),
                             ("a", r"(?P<a>\d+)"), ("b", r"(?P<b>\d+)")):
            escaped = escaped.replace(re.escape("{" + field + "}"), group, 1).replace(re.escape("{" + field + "}"),
                                                                                       f"(?P={field})")
        return re.compile(f"^{escaped}$")


TEMPLATES = (
    Template("add", "{name} has {a} {item} and buys {b} more. How many {item} does {name} have now?",
             lambda a, b: a + b),
    Template("sub", "{name} had {a} {item} and gave {b} away. How many {item} are left?",
             lambda a, b: a - b, lambda a, b: a >= b),
    Template("mul", "{name} fills {a} boxes with {b} {item} each. How many {item} are in the boxes?",
             lambda a, b: a * b),
    Template("div", "{name} shares {a} {item} equally among {b} friends. How many {item} does each friend get?",
             lambda a, b: a // b, lambda a, b: b > 0 and a % b == 0),
)
LOW, HIGH = 1, 9  # the operands' range (dividends are products of two such numbers)


def instantiate(template: Template, a: int, b: int, name: str, item: str) -> tuple[str, str]:
    """A ``(question, answer)`` pair."""
    return template.text.format(name=name, item=item, a=a, b=b), str(template.solve(a, b))


def random_operands(template: Template, rng: random.Random) -> tuple[int, int]:
    """Operands in range for ``template`` (for division the dividend is a multiple of the divisor)."""
    if template.name == "div":
        b, q = rng.randint(LOW, HIGH), rng.randint(LOW, HIGH)
        return b * q, b
    while True:
        a, b = rng.randint(LOW, HIGH), rng.randint(LOW, HIGH)
        if template.valid(a, b):
            return a, b


def make_problems(n: int, seed: int = 0, templates: Sequence[Template] = TEMPLATES) -> list[tuple[str, str]]:
    """``n`` distinct problems, templates in turn, numbers / names / items drawn with ``seed``."""
    rng, seen, out = random.Random(seed), set(), []
    limit = 50 * n + 100  # the space is finite: stop rather than loop forever when n exceeds it
    for _ in range(limit):
        template = templates[len(out) % len(templates)]
        question, result = instantiate(template, *random_operands(template, rng), rng.choice(NAMES), rng.choice(ITEMS))
        if question not in seen:
            seen.add(question)
            out.append((question, result))
        if len(out) == n:
            break
    return out


def parse(question: str, templates: Sequence[Template] = TEMPLATES) -> tuple[Template, dict[str, str]] | None:
    """The template a question was made from and its fields, or None."""
    for template in templates:
        match = template.pattern.match(question.strip())
        if match:
            return template, match.groupdict()
    return None


def answer(question: str) -> str | None:
    """The correct answer of a templated question (None: not one of :data:`TEMPLATES`)."""
    found = parse(question)
    if found is None:
        return None
    template, fields = found
    return str(template.solve(int(fields["a"]), int(fields["b"])))


class TemplateTeacher:
    """Writes problems like the parent: same template, operands within ``spread`` of the parent's, new name / item.

    Args:
        spread: how far the new operands may move from the parent's (the divisor and quotient, for division).
        seed: fixes the choices (with the request, as every teacher: resumable).
    """

    name = "template"

    def __init__(self, spread: int = 2, seed: int = 0) -> None:
        self.spread, self.seed = spread, seed

    def generate(self, requests: Sequence[Request], existing: Collection[str] = ()) -> list[list[Candidate]]:
        out: list[list[Candidate]] = []
        for request in requests:
            found = parse(request.parent.text)
            if found is None:  # not a templated problem: nothing this teacher can vary
                out.append([])
                continue
            template, fields = found
            rng = request_rng(self.seed, request)
            a, b = int(fields["a"]), int(fields["b"])
            if template.name == "div":
                a = a // b  # vary the quotient, keep the dividend a multiple of the divisor
            made: list[Candidate] = []
            for _ in range(20 * request.n):
                x = min(HIGH, max(LOW, a + rng.randint(-self.spread, self.spread)))
                y = min(HIGH, max(LOW, b + rng.randint(-self.spread, self.spread)))
                x, y = (x * y, y) if template.name == "div" else (x, y)
                if not template.valid(x, y):
                    continue
                made.append(instantiate(template, x, y, rng.choice(NAMES), rng.choice(ITEMS)))
                if len(made) == request.n:
                    break
            out.append(made)
        return out
