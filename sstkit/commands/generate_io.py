"""Loading and scoring for ``sstkit generate`` and ``benchmarks/ppc``: the steered LM, its discriminator, the
judge, the fluency LM, and the metric record of one set of controlled generations.

Example:
    >>> lm = load_steerable("runs/opt-sst2-ppc-lm/seed0/checkpoints/last.ckpt", "configs/opt/sst2_ood/lm.yaml")  # doctest: +SKIP
    >>> head = load_or_fit_discriminator(lm, "runs/ppc/discriminator.pt", "sst2/train.tsv", limit=4000)  # doctest: +SKIP
    >>> evaluate(output, judge=load_judge(ckpt), fluency=load_fluency_lm("smollm2"))  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sstkit.errors import SstkitError
from sstkit.generation.control import (
    CHECKPOINT_PREFIX,
    AttributeHead,
    ControlledOutput,
    SteerableLM,
    conditional_perplexity,
    distinct_n,
    fit_attribute_head,
    head_accuracy,
)
from sstkit.paths import resolve_data_dir


def load_steerable(model: str, data_config: str | None = None, overrides: list[str] | None = None,
                   device: Any = "cpu") -> SteerableLM:
    """A sstkit ``CausalLM`` checkpoint (tokenizer rebuilt from ``data_config``) or any HF causal LM name/path.

    sstkit LMs are trained on a stream of lines, so their prompts start after a line break, as a sentence does.
    """
    if model.endswith(".ckpt"):
        from sstkit.commands.ood import _tokenizer, load_causal_lm

        if not data_config:
            raise SstkitError(f"--model {model}: a sstkit checkpoint needs --data-config (its training config)")
        lm = load_causal_lm(model).lm.eval().to(device)
        tokenizer = _tokenizer(data_config, overrides or [])
        if len(tokenizer) > lm.config.vocab_size:
            raise SstkitError(f"--model {model}: the tokenizer of --data-config {data_config} has {len(tokenizer)} "
                              f"tokens but the model has {lm.config.vocab_size} embeddings")
        return SteerableLM(lm, tokenizer, prefix="\n")
    from sstkit.loaders import load_causal_lm, load_chat_tokenizer

    return SteerableLM(load_causal_lm(model).to(device), load_chat_tokenizer(model))


def read_prompts(path: str | Path, limit: int | None = None) -> list[str]:
    """One prompt per non-empty line of a text file."""
    path = Path(path)
    if not path.is_file():
        raise SstkitError(f"--prompts {path}: no such file (one prompt per line)")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise SstkitError(f"--prompts {path}: no prompts (one per non-empty line)")
    return prompts[:limit]


def load_or_fit_discriminator(lm: SteerableLM, path: str | Path, train_file: str = "sst2/train.tsv",
                              limit: int = 4000, dev_file: str | None = "sst2/dev.tsv",
                              dev_limit: int = 1000) -> AttributeHead:
    """The head at ``path``; if there is none yet, fits one on ``limit`` labelled rows and saves it there.

    A ``.ckpt`` path is a ``CausalLM`` checkpoint trained with the ``AttributeDiscriminator`` callback: its head.
    """
    path = Path(path)
    if path.is_file():
        head = AttributeHead.from_checkpoint(path) if path.suffix == ".ckpt" else AttributeHead.load(path)
        if head.linear.in_features != lm.model.config.hidden_size:
            raise SstkitError(f"--discriminator {path}: made for hidden size {head.linear.in_features}, the LM has "
                              f"{lm.model.config.hidden_size}")
        return head.to(lm.device)
    if path.suffix == ".ckpt":
        raise SstkitError(f"--discriminator {path}: no such checkpoint file")
    from sstkit.commands.classifier_io import read_texts

    texts, labels = read_texts(_data_path(train_file), limit=limit)
    head = fit_attribute_head(lm, texts, labels, epochs=300, lr=1e-2)
    head.save(path)
    if dev_file:
        dev_texts, dev_labels = read_texts(_data_path(dev_file), limit=dev_limit)
        acc = head_accuracy(head, lm, dev_texts, dev_labels)
        path.with_suffix(".json").write_text(f'{{"dev_accuracy": {acc:.4f}, "dev_rows": {len(dev_texts)}, '
                                             f'"train_rows": {len(texts)}}}\n')
    return head


def checkpoint_has_head(model: str) -> bool:
    """Whether ``model`` is a ``CausalLM`` checkpoint that holds an ``AttributeDiscriminator`` head."""
    if not model.endswith(".ckpt") or not Path(model).is_file():
        return False
    import torch

    state = torch.load(model, map_location="cpu", weights_only=False).get("state_dict", {})
    return any(k.startswith(CHECKPOINT_PREFIX) for k in state)


def _data_path(spec: str) -> Path:
    path = Path(spec)
    return path if path.is_file() else resolve_data_dir(None) / spec


def load_judge(path: str) -> Any:
    """The separate judge: a sstkit ``TextClassifier`` checkpoint or exported folder (e.g. MiniLM on SST-2)."""
    from sstkit.commands.classifier_io import load_classifier

    return load_classifier(path)


def judge_accuracy(judge: Any, texts: list[str], labels: list[int]) -> float:
    """Share of texts the judge assigns the intended attribute."""
    from sstkit.commands.classifier_io import accuracy, backbone_of, make_batches

    return accuracy(judge, make_batches(texts, labels, backbone_of(judge), max_length=64, batch_size=64))


def load_fluency_lm(name: str) -> tuple[Any, Any]:
    """A second LM for perplexity: ``smollm2`` (packaged, offline), a hub name or a local path."""
    from sstkit.loaders import load_causal_lm, load_chat_tokenizer

    return load_causal_lm(name), load_chat_tokenizer(name)


def evaluate(output: ControlledOutput, judge: Any | None = None, fluency: tuple[Any, Any] | None = None) -> dict[str, float]:
    """Judge accuracy (on prompt + continuation), perplexity under the fluency LM, Dist-1/2/3 and tokens/s."""
    continuations = [" " + " ".join(t.split()) for t in output.texts]
    record = {f"dist{n}": distinct_n(continuations, n) for n in (1, 2, 3)}
    record["tokens_per_s"] = output.tokens_per_second
    record["n"] = float(len(output.texts))
    if judge is not None:
        full = [p + c for p, c in zip(output.prompts, continuations, strict=True)]
        record["judge_acc"] = judge_accuracy(judge, full, output.labels)
    if fluency is not None:
        record["ppl"] = conditional_perplexity(fluency[0], fluency[1], output.prompts, continuations)
    return record
