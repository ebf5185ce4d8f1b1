"""AG News (4 topics): ``agnews/{train,test}.tsv``, no header, ``text<TAB>label`` with label names.

The data folder's train.tsv is a balanced 10,000-row sample of the training set; test.tsv the 7,600-row test set.

Example (YAML)::

    data:
      class_path: sstkit.datamodules.AGNewsDataModule
      init_args: {batch_size: 32}
"""

from __future__ import annotations

from pathlib import Path

from .hub import write_hub_split
from .text_classification import TextClassificationDataModule

AGNEWS_LABELS = ["World", "Sports", "Business", "Sci/Tech"]


class AGNewsDataModule(TextClassificationDataModule):
    """AG News; validation uses the test file unless ``val_file`` names another one.

    Args:
        val_file: validation file name (AG News ships no dev split; default ``test.tsv``).
        Others: see :class:`TextClassificationDataModule`.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        tokenizer: str = "minilm",
        max_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        limit_train_samples: int | None = None,
        limit_eval_samples: int | None = None,
        val_file: str = "test.tsv",
        seed: int = 0,
        download: bool = False,
    ) -> None:
        super().__init__(
            data_dir=data_dir,
            dataset_folder="agnews",
            train_file="train.tsv",
            val_file=val_file,
            test_file="test.tsv",
            header=None,
            label_names=AGNEWS_LABELS,
            tokenizer=tokenizer,
            max_length=max_length,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            limit_train_samples=limit_train_samples,
            limit_eval_samples=limit_eval_samples,
            seed=seed,
            download=download,
        )

    def fetch_from_hub(self, target: Path) -> None:
        write_hub_split(("ag_news",), "train", target, {"train.tsv": 1.0}, "text", "label", label_names=AGNEWS_LABELS)
        write_hub_split(("ag_news",), "test", target, {"test.tsv": 1.0}, "text", "label", label_names=AGNEWS_LABELS)
