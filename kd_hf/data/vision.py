"""
Image preprocessing for a student and a teacher that may expect different sizes, statistics or channel counts.

Pixels are computed once with a batched, fingerprinted `Dataset.map` and cached as float32 arrays, which suits the
small images this package distils on (MNIST, digits, CIFAR-sized data). For 224x224 RGB models that cache is about
600 KB per image and model; prefer on-the-fly transforms (`Dataset.with_transform`) there.
"""

from typing import Any

import datasets
from transformers import PretrainedConfig
from transformers.utils import is_torchvision_available


_MODES = {1: "L", 3: "RGB"}


def default_image_processor(config: PretrainedConfig) -> Any:
    """
    Builds an image processor for a model created from a config, which has no saved processor of its own.

    Images are resized to `config.image_size` and scaled to [-1, 1] (mean and std 0.5 per channel), which is what
    ViT-style models built from scratch are trained with.

    Args:
        config (`PretrainedConfig`):
            A vision config with `image_size` (an `int` or a `(height, width)` pair) and, optionally, `num_channels`
            (defaults to 3; MNIST-style models use 1).

    Returns:
        `transformers.ViTImageProcessor`: the PIL-backed variant (`ViTImageProcessorPil`) when torchvision is not
        installed, which is what `ViTImageProcessor(...)` itself falls back to, minus its warning.
    """
    image_size = getattr(config, "image_size", None)
    if image_size is None:
        raise ValueError(
            f"{type(config).__name__} has no `image_size`; set it in `model_config` (e.g. `{{image_size: 28}}`) or "
            "load a checkpoint that ships an image processor."
        )
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    num_channels = getattr(config, "num_channels", 3)
    if is_torchvision_available():
        from transformers import ViTImageProcessor as processor_class
    else:
        from transformers import ViTImageProcessorPil as processor_class
    return processor_class(
        size={"height": height, "width": width}, image_mean=[0.5] * num_channels, image_std=[0.5] * num_channels
    )


def _mode(num_channels: int, who: str) -> str:
    if num_channels not in _MODES:
        raise ValueError(
            f"The {who} expects {num_channels}-channel images; only 1 (grayscale) or 3 (RGB) are supported. "
            "Set `num_channels` in `model_config` to 1 or 3."
        )
    return _MODES[num_channels]


def preprocess_images(
    dataset: datasets.Dataset,
    image_processor: Any,
    teacher_image_processor: Any | None = None,
    image_column: str = "image",
    label_column: str | None = "label",
    num_channels: int = 3,
    teacher_num_channels: int | None = None,
) -> datasets.Dataset:
    """
    Turns an image-classification dataset into `pixel_values` for the student and, if needed, for the teacher.

    Args:
        dataset (`datasets.Dataset`):
            Raw examples with a `datasets.Image` column and an integer (or `ClassLabel`) label column.
        image_processor (`BaseImageProcessor`):
            The student's image processor.
        teacher_image_processor (`BaseImageProcessor`, *optional*):
            The teacher's; when it and the channel count match the student's, one `pixel_values` serves both.
        image_column (`str`, *optional*, defaults to `"image"`):
            Column holding the images.
        label_column (`str`, *optional*, defaults to `"label"`):
            Column renamed to `labels`, keeping its `ClassLabel` names; `None` or absent for unlabelled data.
        num_channels (`int`, *optional*, defaults to 3):
            Channels the student expects: images are converted to grayscale ("L") for 1 and to "RGB" for 3.
        teacher_num_channels (`int`, *optional*):
            Channels the teacher expects; defaults to `num_channels`.

    Returns:
        `datasets.Dataset`: `pixel_values` (float32, `[num_channels, height, width]`), `labels`, and
        `teacher_pixel_values` when the teacher needs its own, in torch format for `default_data_collator`.
    """
    from .text import TEACHER_PREFIX

    if image_column not in dataset.column_names:
        raise ValueError(
            f"image column {image_column!r} not in the dataset (columns: {', '.join(dataset.column_names)}); "
            "set `image_column` in the recipe."
        )
    if label_column is not None and label_column in dataset.column_names and label_column != "labels":
        dataset = dataset.rename_column(label_column, "labels")
    teacher_num_channels = teacher_num_channels or num_channels
    mode = _mode(num_channels, "student")
    teacher_mode = _mode(teacher_num_channels, "teacher")
    if teacher_image_processor is not None and (
        teacher_num_channels == num_channels and teacher_image_processor.to_dict() == image_processor.to_dict()
    ):
        teacher_image_processor = None

    def process(batch: dict[str, list]) -> dict[str, Any]:
        def pixels(processor: Any, image_mode: str) -> Any:
            images = [image.convert(image_mode) for image in batch[image_column]]
            # PIL images are always height x width x channels; saying so stops a guess on tiny images (3x3 RGB).
            encoded = processor(images, return_tensors="np", input_data_format="channels_last")
            return encoded["pixel_values"].astype("float32")

        out = {"pixel_values": pixels(image_processor, mode)}
        if teacher_image_processor is not None:
            out[TEACHER_PREFIX + "pixel_values"] = pixels(teacher_image_processor, teacher_mode)
        return out

    processed = dataset.map(
        process,
        batched=True,
        remove_columns=[column for column in dataset.column_names if column != "labels"],
        desc="Preprocessing images" + (" for student and teacher" if teacher_image_processor is not None else ""),
    )
    return processed.with_format("torch")
