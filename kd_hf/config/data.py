"""The data of a run: the dataset and its splits, a transfer set, augmentation, and how examples are cut."""

from dataclasses import dataclass, field

from ..options import RecipeOptions


@dataclass
class DataOptions(RecipeOptions):
    """Where the examples come from, which columns to read, and which splits train, evaluate and report."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Dataset: a Hub id, a local builder (`csv`, `json`, `imagefolder`, with `data_files`) or an "
            "offline corpus (`offline:rotten_tomatoes`, `offline:mnist`, `offline:digits`)."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Dataset configuration name, if any."})
    data_files: dict | str | None = field(
        default=None, metadata={"help": "Local files per split, e.g. `{train: train.csv, validation: dev.csv}`."}
    )
    text_columns: list[str] = field(
        default_factory=lambda: ["text"],
        metadata={"help": "Text column(s) of a text dataset; two columns are encoded as a sentence pair."},
    )
    image_column: str | None = field(
        default=None,
        metadata={"help": "Image column of an image dataset; setting it makes the task image classification."},
    )
    label_column: str = field(default="label", metadata={"help": "Column holding the class label."})
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(
        default="validation",
        metadata={
            "help": "Split to evaluate on; it must exist, except `validation`: a dataset without that split has "
            "`eval_split_size` of the train split held out instead."
        },
    )
    transfer_dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A transfer set: unlabelled texts added to the training split, from which the student learns the "
            "teacher's soft labels alone (a Hub id, a local builder with `transfer_data_files`, or "
            "`offline:rotten_tomatoes_plots`). Read through `text_columns`; any label it has is dropped."
        },
    )
    transfer_data_files: dict | str | None = field(
        default=None, metadata={"help": "Local files of the transfer set, e.g. `unlabelled.csv` or `{train: a.txt}`."}
    )
    transfer_split: str = field(default="train", metadata={"help": "Split of the transfer set to add."})
    max_transfer_samples: int | None = field(
        default=None,
        metadata={
            "help": "Keep at most this many texts of the transfer set (>= 1): a sample drawn with seed 0, the same "
            "for every run, so runs share the teacher's cached soft labels on it.",
        },
    )
    augment_copies: int = field(
        default=0,
        metadata={
            "help": "Text distillation: add this many TinyBERT-style variants of each training text (words replaced by "
            "their nearest neighbours in the teacher's embedding space, or masked), which learn from the teacher's "
            "soft labels alone (`kd_hf.data.augment`); 0 adds none.",
        },
    )
    augment_word_prob: float = field(
        default=0.4, metadata={"help": "With `augment_copies`: chance that a word is replaced by a neighbour."}
    )
    augment_mask_prob: float = field(
        default=0.1, metadata={"help": "With `augment_copies`: chance that a word is replaced by the mask token."}
    )
    report_split: str | None = field(
        default="test",
        metadata={
            "help": "Split of the final report and the card, held out of training and of its evaluations "
            "(`eval_split`); a dataset without it is reported on `eval_split`, and the report says so. `null` "
            "reports on `eval_split`."
        },
    )
    eval_split_size: float = field(
        default=0.1,
        metadata={
            "help": "Fraction of the train split held out when `eval_split` is missing, in (0, 1).",
        },
    )
    max_length: int = field(
        default=128,
        metadata={
            "help": "Maximum tokens per text example (truncation), >= 8.",
        },
    )
    max_train_samples: int | None = field(
        default=None,
        metadata={
            "help": "Keep at most this many training examples (>= 1).",
        },
    )
    max_eval_samples: int | None = field(
        default=None,
        metadata={
            "help": "Keep at most this many eval examples (>= 1).",
        },
    )

    RANGES = {
        "augment_copies": (">= 0", "0 = no augmentation"),
        "eval_split_size": ("(0, 1)", None),
        "max_length": (">= 8", "tokens per text example"),
        "max_train_samples": (">= 1", "leave it unset to keep every example"),
        "max_eval_samples": (">= 1", "leave it unset to keep every example"),
        "max_transfer_samples": (">= 1", "leave it unset to keep every transfer text"),
    }
    MAPPINGS = ("data_files",)

    def validate(self) -> None:
        if not (0 <= self.augment_word_prob and 0 <= self.augment_mask_prob and
                self.augment_word_prob + self.augment_mask_prob <= 1):  # fmt: skip
            raise ValueError(
                "`augment_word_prob` and `augment_mask_prob` must be >= 0 with a sum <= 1, got "
                f"{self.augment_word_prob} and {self.augment_mask_prob}."
            )
        if self.has_transfer_set and self.is_image_task:
            raise ValueError("A transfer set (`transfer_dataset_name`) adds texts; leave it out for images.")
        if self.augment_copies and self.is_image_task:
            raise ValueError("`augment_copies` augments texts; leave it at 0 for images.")
        if not self.text_columns and self.image_column is None:
            raise ValueError("Set `text_columns` (text classification) or `image_column` (image classification).")
        if len(self.text_columns) > 2 and self.image_column is None:
            raise ValueError(f"`text_columns` takes one column or a sentence pair, got {self.text_columns}.")

    @property
    def is_image_task(self) -> bool:
        return self.image_column is not None

    @property
    def has_transfer_set(self) -> bool:
        return bool(self.transfer_dataset_name or self.transfer_data_files)
