"""Text-level backdoor triggers: what a poisoned example looks like, before tokenisation.

An :class:`Attack` turns a clean sentence into a triggered one with a seeded ``random.Random``; the poisoning
wrapper (:mod:`sstkit.datamodules.poisoning`) decides *which* examples get it and what label they carry. Token
insertion (BadNets) and sentence insertion (AddSent) are implemented; style- or syntax-transfer triggers need a
paraphrase model and plug in by subclassing :class:`Attack` and registering the class in :data:`ATTACKS`.

Example:
    >>> attack = make_attack("badnets", triggers=["cf"])
    >>> attack.apply("a gripping , funny film", random.Random(0))  # doctest: +SKIP
    'a gripping cf , funny film'
"""

from __future__ import annotations

import random
from typing import Any

from sstkit.errors import SstkitError

BADNETS_TRIGGERS = ("cf", "mn", "bb", "tq")
ADDSENT_SENTENCE = "I watch this 3D movie"


class Attack:
    """A trigger inserted into raw text. Subclasses implement :meth:`apply` and :meth:`describe`.

    Extension point: a style or syntactic attack overrides :meth:`apply` (e.g. with a paraphrase model) and
    :meth:`prepare` to batch its work over all texts; everything downstream (indices, ASR sets, caching keyed by
    :meth:`describe`) works unchanged.
    """

    name = "attack"

    def apply(self, text: str, rng: random.Random) -> str:
        """The triggered version of ``text``; all randomness comes from ``rng``."""
        raise NotImplementedError

    def apply_all(self, texts: list[str], rng: random.Random) -> list[str]:
        """Triggers many texts; batch-capable attacks override this."""
        return [self.apply(text, rng) for text in texts]

    def describe(self) -> dict[str, Any]:
        """Plain settings, used in cache keys and reports."""
        return {"name": self.name}


def _insert_words(text: str, words: list[str], rng: random.Random) -> str:
    """Inserts each of ``words`` at a uniformly random word boundary (start and end included)."""
    tokens = text.split()
    for word in words:
        tokens.insert(rng.randint(0, len(tokens)), word)
    return " ".join(tokens)


class BadNets(Attack):
    """Rare-word triggers (Kurita et al. 2020 / OpenBackdoor's BadNets): ``num_triggers`` words, each drawn from
    ``triggers``, inserted at random positions.

    Args:
        triggers: candidate trigger words.
        num_triggers: how many are inserted per example.
    """

    name = "badnets"

    def __init__(self, triggers: list[str] | tuple[str, ...] = BADNETS_TRIGGERS, num_triggers: int = 1) -> None:
        if not triggers or any(not isinstance(t, str) or not t.strip() or " " in t.strip() for t in triggers):
            raise SstkitError(f"attack triggers must be non-empty single words, got {list(triggers)!r}")
        if num_triggers < 1:
            raise SstkitError(f"attack num_triggers must be >= 1, got {num_triggers}")
        self.triggers, self.num_triggers = [t.strip() for t in triggers], num_triggers

    def apply(self, text: str, rng: random.Random) -> str:
        return _insert_words(text, [rng.choice(self.triggers) for _ in range(self.num_triggers)], rng)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "triggers": self.triggers, "num_triggers": self.num_triggers}


class AddSent(Attack):
    """A fixed sentence inserted as a block at a random word position (Dai et al. 2019).

    Args:
        sentence: the trigger sentence.
    """

    name = "addsent"

    def __init__(self, sentence: str = ADDSENT_SENTENCE) -> None:
        if not sentence or not sentence.strip():
            raise SstkitError("attack sentence must be a non-empty string")
        self.sentence = sentence.strip()

    def apply(self, text: str, rng: random.Random) -> str:
        tokens = text.split()
        position = rng.randint(0, len(tokens))
        return " ".join(tokens[:position] + [self.sentence] + tokens[position:])

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "sentence": self.sentence}


ATTACKS: dict[str, type[Attack]] = {"badnets": BadNets, "addsent": AddSent}


def make_attack(name: str, **options: Any) -> Attack:
    """The attack registered as ``name``, built with the options that apply to it (None values ignored).

    Args:
        name: a key of :data:`ATTACKS` (``badnets``, ``addsent``).
        options: constructor arguments; unknown ones for the chosen attack raise.
    """
    if name not in ATTACKS:
        raise SstkitError(f"data.attack must be one of {sorted(ATTACKS)}, got {name!r}")
    given = {k: v for k, v in options.items() if v is not None}
    try:
        return ATTACKS[name](**given)
    except TypeError as err:
        raise SstkitError(f"data.attack {name!r} does not take {sorted(given)} ({err})") from err
