"""The chat-model teacher: a prompt in the structure of LLM2LLM's, reply parsing and label checking.

The official prompt shows the teacher one training example the student got wrong (never the student's answer),
states the task, asks for new examples "similar in style and content" with the same answer, and fixes an output
format that is then parsed. Here the example is ``Sentence: … / Label: …`` and each new one must come back in the
same two-line form; a reply line that is a sentence without a label line is kept with the parent's label only
when ``require_label`` is off, and a labelled one whose label differs from the parent's is dropped (label check).
Any :class:`~sstkit.generation.ChatBackend` works: SmolLM2 offline, a Hugging Face chat model, an
OpenAI-compatible endpoint.

Example:
    >>> from sstkit.generation import HFChatModel  # doctest: +SKIP
    >>> teacher = ChatTeacher(HFChatModel.load("smollm2"), label_names=["negative", "positive"])  # doctest: +SKIP
    >>> parse_reply("Sentence: a dull film\\nLabel: negative", ["negative", "positive"])
    [('a dull film', 0)]
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from sstkit.errors import SstkitError
from sstkit.functional.llm2llm.teachers import Candidate, Request
from sstkit.generation.base import ChatBackend, GenerationSettings

SYSTEM = "You are a helpful assistant that writes new training examples for a text classification data set."
PROMPT = (
    "The task: {task}\n"
    "Here is one example from the training data:\n"
    "Sentence: {text}\n"
    "Label: {label}\n\n"
    "Write {n} new, different sentences that are similar to this example in style and content and have the same "
    "label ({label}). Do not copy the example. Write each one on two lines, exactly like this:\n"
    "Sentence: <the new sentence>\n"
    "Label: {label}"
)
_SENTENCE = re.compile(r"^\s*(?:\d+[.)]\s*)?(?:\*\*)?(?:new\s+)?sentence(?:\s*\d+)?\s*:?(?:\*\*)?\s*:?\s*(.+)$", re.I)
_PREFIX = re.compile(r"^(?:\s*(?:new\s+)?sentence\s*:\s*)+", re.I)  # "Sentence: Sentence: x" -> "x"
# The prompt's own placeholder echoed back ("<the new sentence>"), or a line with no word in it ("[1]").
_PLACEHOLDER = re.compile(r"^\W*(?:the\s+)?new\s+sentence\W*$|^[^A-Za-z]*(?:[A-Za-z][^A-Za-z]*)?$", re.I)
_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+(.+)$")  # a numbered or bulleted line, as small models often write
_LABEL = re.compile(r"^\s*(?:\*\*)?label(?:\*\*)?\s*:\s*(?:\*\*)?\s*([\w -]+?)\s*(?:\*\*)?\s*$", re.I)


def parse_reply(reply: str, label_names: Sequence[str], default_label: int | None = None) -> list[Candidate]:
    """``(sentence, label)`` pairs from a reply in the prompt's format.

    A ``Sentence:`` line (or, failing the format, a numbered or bulleted line) opens a candidate and the next
    ``Label:`` line labels it; a label that is not one of ``label_names`` drops the candidate, and so does an echo
    of the prompt's placeholder or a line without a word. Candidates without a label line get ``default_label``
    (None: dropped).
    """
    names = {name.lower(): i for i, name in enumerate(label_names)}
    out: list[Candidate] = []
    pending: str | None = None

    def close(label: int | None) -> None:
        nonlocal pending
        if pending is not None and label is not None:
            out.append((pending, label))
        pending = None

    for line in reply.splitlines():
        label_match = _LABEL.match(line)
        if label_match:
            close(names.get(label_match.group(1).strip().lower()))
            continue
        sentence_match = _SENTENCE.match(line) or _ITEM.match(line)
        if sentence_match:
            close(default_label)
            text = _PREFIX.sub("", sentence_match.group(1)).strip().strip('"').strip()
            pending = None if _PLACEHOLDER.match(text) else text
    close(default_label)
    return out


class ChatTeacher:
    """Asks a chat model for new examples like each parent, one prompt per request, decoded in batches.

    Args:
        backend: any chat backend (``HFChatModel``, ``OpenAIChatClient``, a scripted one in tests).
        label_names: the class names the prompt shows (index = label).
        task: one sentence describing the task, shown to the teacher.
        settings: decoding settings; each request is decoded with ``seed + attempt`` so retries differ
            when sampling.
        require_label: drop sentences whose label line is missing (otherwise they take the parent's label).
    """

    def __init__(self, backend: ChatBackend, label_names: Sequence[str],
                 task: str = "classify the sentiment of a movie review sentence as negative or positive.",
                 settings: GenerationSettings | None = None, require_label: bool = False) -> None:
        if len(label_names) < 2:
            raise SstkitError(f"teacher.label_names: expected at least two class names, got {list(label_names)}")
        self.backend, self.label_names, self.task = backend, list(label_names), task
        self.settings = settings or GenerationSettings(max_new_tokens=96, temperature=0.7, top_p=0.95)
        self.require_label = require_label
        self.name = f"chat:{getattr(backend, 'name', 'model')}"
        self.replies: list[str] = []  # the raw replies of the last call, for logs

    def prompt(self, request: Request) -> str:
        """The user message for one request."""
        parent = request.parent
        return PROMPT.format(task=self.task, text=parent.text, label=self.label_names[parent.label], n=request.n)

    def generate(self, requests: Sequence[Request], existing: Collection[str] = ()) -> list[list[Candidate]]:
        out: list[list[Candidate]] = [[] for _ in requests]
        by_attempt: dict[int, list[int]] = {}
        for i, request in enumerate(requests):
            by_attempt.setdefault(request.attempt, []).append(i)
        self.replies = [""] * len(requests)
        for attempt, rows in sorted(by_attempt.items()):
            settings = GenerationSettings(**{**self.settings.__dict__, "seed": self.settings.seed + 1000 * attempt})
            replies = self.backend.generate([self.prompt(requests[i]) for i in rows], settings, system=SYSTEM)
            for i, reply in zip(rows, replies, strict=True):
                self.replies[i] = reply.text
                parent = requests[i].parent
                default = None if self.require_label else parent.label
                candidates = parse_reply(reply.text, self.label_names, default)
                out[i] = [(t, y) for t, y in candidates if t.strip().lower() != parent.text.strip().lower()]
        return out
