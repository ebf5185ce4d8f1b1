"""The attacked text: whitespace words plus a record of which original word each current word came from.

Substitution, insertion and removal all keep that record, so constraints (stop words untouched, share of words
changed) and metrics (% words perturbed) are computed from it and never from string differences.

Example:
    >>> t = AttackedText.from_text("a gripping , funny film")
    >>> t.replace(1, "thrilling").insert(4, "very").delete(2).text
    'a thrilling funny very film'
    >>> t.replace(1, "thrilling").num_changed()
    1
"""

from __future__ import annotations

import re
from dataclasses import dataclass

WORD = re.compile(r"^[A-Za-z][A-Za-z'\-]*$")  # attackable words: letters first; punctuation and numbers are kept


@dataclass(frozen=True)
class AttackedText:
    """An immutable word sequence with provenance.

    Args:
        words: the current words.
        origin: for each current word, the index of the original word it sits at (-1: inserted).
        changed: for each current word, whether it differs from the original word (inserted words are changed).
        original: the words of the original text.
        modified_index: the current index of the last edit (None for the original): windowed constraints use it.
    """

    words: tuple[str, ...]
    origin: tuple[int, ...]
    changed: tuple[bool, ...]
    original: tuple[str, ...]
    modified_index: int | None = None

    @classmethod
    def from_text(cls, text: str) -> AttackedText:
        words = tuple(text.split())
        return cls(words, tuple(range(len(words))), (False,) * len(words), words)

    @property
    def text(self) -> str:
        return " ".join(self.words)

    def __len__(self) -> int:
        return len(self.words)

    def is_word(self, i: int) -> bool:
        """Whether word ``i`` is a word an attack may touch (not punctuation or a number)."""
        return bool(WORD.match(self.words[i]))

    @property
    def num_original(self) -> int:
        return len(self.original)

    def replace(self, i: int, word: str) -> AttackedText:
        """The text with word ``i`` replaced; replacing back to the original word clears the change flag."""
        words = list(self.words)
        words[i] = word
        changed = list(self.changed)
        changed[i] = self.origin[i] < 0 or word != self.original[self.origin[i]]
        return AttackedText(tuple(words), self.origin, tuple(changed), self.original, i)

    def insert(self, i: int, word: str) -> AttackedText:
        """The text with ``word`` inserted before current position ``i`` (``i = len`` appends)."""
        return AttackedText(self.words[:i] + (word,) + self.words[i:], self.origin[:i] + (-1,) + self.origin[i:],
                            self.changed[:i] + (True,) + self.changed[i:], self.original, i)

    def delete(self, i: int) -> AttackedText:
        """The text without current word ``i``."""
        return AttackedText(self.words[:i] + self.words[i + 1:], self.origin[:i] + self.origin[i + 1:],
                            self.changed[:i] + self.changed[i + 1:], self.original, max(i - 1, 0))

    def num_deleted(self) -> int:
        return self.num_original - sum(1 for o in self.origin if o >= 0)

    def num_changed(self) -> int:
        """Original words substituted or removed, plus words inserted."""
        return sum(self.changed) + self.num_deleted()

    def changed_share(self) -> float:
        """``num_changed`` over the original length: TextAttack's "% words perturbed" (as a share)."""
        return self.num_changed() / max(self.num_original, 1)

    def changed_origins(self) -> set[int]:
        """Original indices substituted or removed."""
        kept = {o for o, c in zip(self.origin, self.changed) if o >= 0 and not c}
        return set(range(self.num_original)) - kept

    def window(self, i: int, size: int | None) -> str:
        """The ``size`` words around current index ``i`` (the whole text when ``size`` is None)."""
        if size is None or size >= len(self.words):
            return self.text
        start = max(0, min(i - size // 2, len(self.words) - size))
        return " ".join(self.words[start:start + size])
