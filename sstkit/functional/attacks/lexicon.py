"""Word lists the attacks read: synonyms, antonyms and parts of speech (WordNet through NLTK, or a dict), and stop words.

WordNet is read through NLTK. Where NLTK's downloader cannot run, Debian's ``wordnet-base`` files
(``/usr/share/wordnet``) are used: NLTK also needs a ``lexnames`` file that Debian lacks, so the 45 standard
lexicographer file names are written next to copies of the Debian files in the sstkit cache. Tests pass a
:class:`DictLexicon` and need neither.

Example:
    >>> lex = DictLexicon({"good": ["fine", "decent"]}, pos={"good": {"a"}, "fine": {"a"}})
    >>> lex.synonyms("good"), lex.pos("fine")
    (['fine', 'decent'], {'a'})
"""

from __future__ import annotations

import os
import shutil
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from sstkit.errors import SstkitError

DEBIAN_WORDNET = Path("/usr/share/wordnet")
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv", "index.noun", "index.verb", "index.adj",
                 "index.adv", "noun.exc", "verb.exc", "adj.exc", "adv.exc")
# WordNet 3.0's lexicographer files in their numbered order (lexnames is "<number>\t<name>\t<syntactic category>").
LEXNAMES = ("adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
            "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
            "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
            "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
            "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
            "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather "
            "adj.ppl").split()
LEX_CATEGORY = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}


class Lexicon(Protocol):
    """Synonyms and WordNet parts of speech (n, v, a, r) of a lower-case word."""

    def synonyms(self, word: str) -> list[str]: ...

    def pos(self, word: str) -> set[str]: ...


class DictLexicon:
    """A lexicon from plain dicts (tests, or a user's own thesaurus)."""

    def __init__(self, synonyms: dict[str, list[str]], pos: dict[str, set[str]] | None = None,
                 antonyms: dict[str, list[str]] | None = None) -> None:
        self._synonyms, self._pos, self._antonyms = synonyms, pos or {}, antonyms or {}

    def synonyms(self, word: str) -> list[str]:
        return list(self._synonyms.get(word.lower(), []))

    def pos(self, word: str) -> set[str]:
        return set(self._pos.get(word.lower(), set()))

    def antonyms(self, word: str) -> list[str]:
        return list(self._antonyms.get(word.lower(), []))


def _debian_root() -> Path:
    """A folder NLTK's WordNet reader accepts, built from Debian's files plus a generated ``lexnames``."""
    root = Path(os.environ.get("SSTKIT_CACHE", Path.home() / ".cache" / "sstkit")) / "wordnet-debian"
    root.mkdir(parents=True, exist_ok=True)
    for name in WORDNET_FILES:
        # Copies, not links: NLTK resolves links and refuses files outside the reader's root.
        if not (root / name).is_file() or (root / name).is_symlink():
            (root / name).unlink(missing_ok=True)
            shutil.copyfile(DEBIAN_WORDNET / name, root / name)
    lexnames = root / "lexnames"
    if not lexnames.is_file():
        lexnames.write_text("".join(f"{i:02d}\t{name}\t{LEX_CATEGORY[name.split('.')[0]]}\n"
                                    for i, name in enumerate(LEXNAMES)))
    return root


def _reader_class(base: type) -> type:
    class DebianWordNetReader(base):
        """NLTK's reader without the WordNet-version map, which only serves multilingual data and needs NLTK's
        own ``wordnet`` corpus to build."""

        def map_wn(self, version: str = "wordnet") -> None:
            return None

    return DebianWordNetReader


@lru_cache(maxsize=1)
def load_wordnet():  # -> nltk.corpus.reader.WordNetCorpusReader
    """NLTK's WordNet: NLTK's own data if installed, else Debian's ``wordnet-base``; a clear error otherwise."""
    try:
        import nltk
        from nltk.corpus.reader.wordnet import WordNetCorpusReader
    except ImportError as err:
        raise SstkitError("WordNet needs the nltk package: pip install nltk") from err
    try:
        nltk.data.find("corpora/wordnet")
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        return wordnet
    except LookupError:
        pass
    if (DEBIAN_WORDNET / "data.noun").is_file():
        root = _debian_root()
        # NLTK only reads below its data paths.
        if str(root) not in nltk.data.path:
            nltk.data.path.append(str(root))
        with warnings.catch_warnings():  # "multilingual functions not available": no OMW, as intended
            warnings.simplefilter("ignore", UserWarning)
            return _reader_class(WordNetCorpusReader)(str(root), None)
    raise SstkitError("WordNet not found: run `python -m nltk.downloader wordnet` (with a network) or "
                      "`apt-get install wordnet-base` (Debian/Ubuntu, read from /usr/share/wordnet)")


class WordNetLexicon:
    """Single-word WordNet synonyms (TextAttack's ``WordSwapWordNet``: lemma names of all synsets, no phrases)."""

    def __init__(self) -> None:
        self.wn = load_wordnet()

    @lru_cache(maxsize=65536)  # noqa: B019 - one lexicon per process; words repeat across candidates
    def synonyms(self, word: str) -> list[str]:
        out: dict[str, None] = {}
        for synset in self.wn.synsets(word.lower()):
            for lemma in synset.lemma_names():
                if lemma != word.lower() and "_" not in lemma and "-" not in lemma and lemma.isalpha():
                    out[lemma] = None
        return list(out)

    @lru_cache(maxsize=65536)  # noqa: B019
    def antonyms(self, word: str) -> list[str]:
        """Single-word WordNet antonyms: direct ones of the word's lemmas, and for satellite adjectives the
        antonyms of their head adjectives ("superb" -> head "good" -> "bad"), WordNet's indirect antonymy."""
        out: dict[str, None] = {}
        for synset in self.wn.synsets(word.lower()):
            heads = synset.similar_tos() if synset.pos() == "s" else []
            for source in [synset, *heads]:
                for lemma in source.lemmas():
                    if source is not synset or lemma.name() == word.lower():
                        for ant in lemma.antonyms():
                            name = ant.name()
                            if name != word.lower() and name.isalpha():
                                out[name] = None
        return list(out)

    @lru_cache(maxsize=65536)  # noqa: B019
    def pos(self, word: str) -> set[str]:
        # Satellite adjectives ("s") are adjectives.
        return {"a" if s.pos() == "s" else s.pos() for s in self.wn.synsets(word.lower())}


# TextAttack's default stop words (the recipes' StopwordModification): the NLTK English list plus the long tail
# TextAttack adds; scikit-learn's list is the closest shipped equivalent and is used where it is installed.
_FALLBACK_STOPWORDS = set(
    "a about above after again against all am an and any are as at be because been before being below between both "
    "but by can could did do does doing down during each few for from further had has have having he her here hers "
    "herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on "
    "once only or other our ours ourselves out over own same she should so some such than that the their theirs "
    "them themselves then there these they this those through to too under until up very was we were what when "
    "where which while who whom why will with would you your yours yourself yourselves".split())


def stop_words() -> frozenset[str]:
    """The stop-word set (scikit-learn's English list joined with NLTK's, which needs no data file here)."""
    words = set(_FALLBACK_STOPWORDS)
    try:
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        words |= set(ENGLISH_STOP_WORDS)
    except ImportError:
        pass
    return frozenset(words)
