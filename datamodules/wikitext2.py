"""WikiText-2 for language modelling, from ``wikitext2/{valid,test}.txt`` in the data folder.

The shared data folder holds only WikiText-2's validation and test files (the 2M-token ``train.txt`` is absent),
so by default this module **trains on valid.txt (~217k words) and evaluates on test.txt** — validation during
``fit`` and ``sstkit test`` both report test.txt. With ``val_holdout: 0.1`` the last 10 % of valid.txt's lines
become the validation split instead (the model and the tokenizer never train on them) and test.txt stays the
test split. Users with the full corpus set ``train_file: train.txt``, or ``download: true``, which writes
``train.txt``, ``valid.txt`` and ``test.txt`` into the cache from the Hugging Face hub.

Example (YAML)::

    data:
      class_path: sstkit.datamodules.WikiText2DataModule
      init_args: {block_size: 128, batch_size: 16, bpe_vocab_size: 8192, val_holdout: 0.1}
"""

from __future__ import annotations

import os
from pathlib import Path

from sstkit.errors import SstkitError

from .text_corpus import TextCorpusDataModule

HUB_SPLITS = {"train.txt": "train", "valid.txt": "validation", "test.txt": "test"}


class WikiText2DataModule(TextCorpusDataModule):
    """WikiText-2: train on valid.txt, evaluate on test.txt (see the module docstring for why and the options).

    Args:
        hub_config: the ``wikitext`` configuration ``download: true`` fetches. ``wikitext-2-v1`` (default) is the
            version in the shared data folder (rare words already replaced by ``<unk>``); ``wikitext-2-raw-v1``
            is the untokenised original.
        Others: see :class:`TextCorpusDataModule`.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        train_file: str | None = "valid.txt",
        val_file: str | None = "test.txt",
        test_file: str | None = "test.txt",
        val_holdout: float = 0.0,
        tokenizer: str = "bpe",
        bpe_vocab_size: int = 8192,
        block_size: int = 128,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        limit_train_blocks: int | None = None,
        limit_eval_blocks: int | None = None,
        seed: int = 0,
        download: bool = False,
        hub_config: str = "wikitext-2-v1",
    ) -> None:
        self.hub_config = hub_config
        super().__init__(
            data_dir, "wikitext2", train_file, val_file, test_file, val_holdout, tokenizer, bpe_vocab_size,
            block_size, batch_size, eval_batch_size, num_workers, limit_train_blocks, limit_eval_blocks, seed,
            download,
        )
        if download:
            # Downloads of the two versions must not share a cache folder.
            self.dataset_name = f"wikitext2-{hub_config}"

    def fetch_from_hub(self, target: Path) -> None:
        try:
            from datasets import load_dataset
        except ImportError as err:
            raise SstkitError("downloading from the Hugging Face hub needs the `datasets` package: pip install 'sstkit[hub]'") from err
        target.mkdir(parents=True, exist_ok=True)
        for name, split in HUB_SPLITS.items():
            try:
                rows = load_dataset("wikitext", self.hub_config, split=split)
            except Exception as err:  # the hub raises many kinds of connection errors
                raise SstkitError(f"could not download wikitext/{self.hub_config} ({split}): {err}") from err
            # Each row is one line of the original file, line end included.
            tmp = target / f".{name}.tmp{os.getpid()}"
            tmp.write_text("".join(rows["text"]), encoding="utf-8")
            os.replace(tmp, target / name)
