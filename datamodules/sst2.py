"""SST-2 (binary sentiment): ``sst2/{train,dev,test}.tsv`` with header ``sentence<TAB>label``.

``train`` + ``dev`` together are GLUE's SST-2 training set; ``test`` is GLUE's validation set, the 872 sentences
papers report accuracy on.

Example (YAML)::

    data:
      class_path: sstkit.datamodules.SST2DataModule
      init_args: {batch_size: 32, limit_train_samples: 6000}
"""

from __future__ import annotations

from pathlib import Path

from .hub import write_hub_split
from .text_classification import TextClassificationDataModule


class SST2DataModule(TextClassificationDataModule):
    """SST-2 from the data folder (``download: true`` rebuilds the same files from the hub's GLUE copy).

    Args:
        data_dir: the data folder (default ``$SSTKIT_DATA``, else ``./data``).
        val_split: file used for validation, ``dev`` or ``test``.
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
        val_split: str = "dev",
        seed: int = 0,
        download: bool = False,
    ) -> None:
        super().__init__(
            data_dir=data_dir,
            dataset_folder="sst2",
            train_file="train.tsv",
            val_file=f"{val_split}.tsv",
            test_file="test.tsv",
            header=["sentence", "label"],
            num_labels=2,
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
        # GLUE's train is split 90/10 (seed 0) into train/dev; GLUE's validation is test.tsv, as in the data folder.
        write_hub_split(("glue", "sst2"), "train", target, {"train.tsv": 0.9, "dev.tsv": 0.1}, "sentence", "label",
                        header=["sentence", "label"])
        write_hub_split(("glue", "sst2"), "validation", target, {"test.tsv": 1.0}, "sentence", "label",
                        header=["sentence", "label"])
