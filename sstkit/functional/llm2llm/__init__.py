"""LLM2LLM (Lee et al., ACL Findings 2024): iterative, targeted augmentation of a low-data student by a teacher.

- :mod:`.data`: examples with provenance, per-iteration files, ROUGE-L near-duplicate filtering;
- :mod:`.teachers`: the :class:`Teacher` protocol, the rule (WordNet/EDA) and retrieval (MiniLM cosine) teachers;
- :mod:`.chat_teacher`: a chat model (SmolLM2, any HF chat model, an OpenAI-compatible endpoint) as teacher;
- :mod:`.loop`: the loop and its baselines (seed-only, one-shot, random, continued fine-tuning), resumable.

No Lightning here: a student is anything with ``train`` and ``predict`` (``sstkit llm2llm`` plugs in sstkit runs).

Example:
    >>> from sstkit.functional.llm2llm import Llm2LlmLoop, LoopConfig, RuleTeacher, seed_examples
    >>> loop = Llm2LlmLoop(my_student, RuleTeacher(), LoopConfig(iterations=3), Path("runs/l2l"))  # doctest: +SKIP
"""

from sstkit.functional.llm2llm.chat_teacher import ChatTeacher, parse_reply
from sstkit.functional.llm2llm.data import (
           Example,
           NearDuplicateFilter,
           load_jsonl,
           rouge_l,
           seed_examples,
           write_examples,
)
from sstkit.functional.llm2llm.loop import MODES, Llm2LlmLoop, LoopConfig, Student, history_table
from sstkit.functional.llm2llm.teachers import Request, RetrievalTeacher, RuleTeacher, Teacher, minilm_embedder

__all__ = ["MODES", "ChatTeacher", "Example", "Llm2LlmLoop", "LoopConfig", "NearDuplicateFilter", "Request",
           "RetrievalTeacher", "RuleTeacher", "Student", "Teacher", "history_table", "load_jsonl", "minilm_embedder",
           "parse_reply", "rouge_l", "seed_examples", "write_examples"]
