"""Export a saved classifier to ONNX (`torch.onnx.export(..., dynamo=True)`) and quantise it to int8 with
onnxruntime's dynamic quantisation, into the `onnx/` layout that transformers.js reads from a Hub repo.

```python
from kd_hf.export import export_onnx

exported = export_onnx("outputs/student", quantize="int8")
exported.model_path, exported.quantized_path, exported.input_names
```

An existing `onnx/` folder is replaced whole: everything is written into a temporary folder beside it (named `_onnx*`,
which a push never publishes), checked, and only then swapped in. An export that fails leaves the old folder as it
was.
"""

import inspect
import logging
import os
import re
import shutil
import uuid
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..models import load_model
from .quantize import quantize_int8
from .runtime import OnnxClassifier, is_image_model


logger = logging.getLogger(__name__)

ONNX_DIR = "onnx"
MODEL_FILE = "model.onnx"
QUANTIZED_FILE = "model_quantized.onnx"  # transformers.js loads this name for `dtype: "q8"`
DEFAULT_OPSET = 18
QUANTIZATIONS = ("int8",)
# The fp32 graph must give PyTorch's logits on shapes it was not traced with; more than this means it was not exported
# faithfully (a shape the tracer specialised, for one), and it is refused.
EXPORT_TOLERANCE = 1e-3


class ExportError(ValueError):
    """A model that could not be exported to ONNX; the message names the architecture and what to try instead."""


@dataclass(frozen=True)
class OnnxExport:
    """What `export_onnx` wrote.

    Attributes:
        folder (`str`): the `onnx/` folder.
        model_path (`str`): the fp32 graph, `onnx/model.onnx`.
        quantized_path (`str`, *optional*): the int8 graph, `onnx/model_quantized.onnx`; `None` without `quantize`.
        input_names (`tuple[str, ...]`): the graph's inputs (`input_ids`, `attention_mask`[, `token_type_ids`], or
            `pixel_values`); batch (and sequence) axes are dynamic, the output is `logits`.
        opset (`int`): the ONNX opset.
        architecture (`str`): the model's class, e.g. `BertForSequenceClassification`.
        quantization (`dict`, *optional*): the settings of `quantize_dynamic` (`weight_type`, `per_channel`,
            `reduce_range`).
    """

    folder: str
    model_path: str
    quantized_path: str | None
    input_names: tuple[str, ...]
    opset: int
    architecture: str
    quantization: dict | None = None


class _Logits(torch.nn.Module):
    """The classifier with its inputs named as the graph's and its logits as its only output."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, pixel_values=None):
        names = ("input_ids", "attention_mask", "token_type_ids", "pixel_values")
        values = (input_ids, attention_mask, token_type_ids, pixel_values)
        return self.model(**{name: value for name, value in zip(names, values) if value is not None}).logits


def example_inputs(model, batch_size: int = 2, length: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs of the graph's names and dtypes: `pixel_values` of the model's image size for an image
    classifier, else token ids with `token_type_ids` where the model's forward takes them."""
    generator = torch.Generator().manual_seed(seed)
    config = model.config
    if is_image_model(model):
        size = getattr(config, "image_size", 224)
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        shape = (batch_size, getattr(config, "num_channels", 3), height, width)
        return {"pixel_values": torch.randn(shape, generator=generator)}
    ids = torch.randint(min(5, config.vocab_size - 1), config.vocab_size, (batch_size, length), generator=generator)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        inputs["token_type_ids"] = torch.zeros_like(ids)
    return inputs


def require_export_extra() -> None:
    """Raise `ModuleNotFoundError` naming the extra to install when onnx, onnxscript or onnxruntime is missing."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ModuleNotFoundError(
            f"Exporting to ONNX needs {', '.join(missing)}: `pip install 'kd-hf[export]'` (pinned versions: "
            "`pip install -c .ci/constraints.txt -e '.[export]'` in a checkout)."
        )


def is_image_folder(folder: str) -> bool:
    """Whether the classifier saved in `folder` is an image classifier, by its config."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    config = AutoConfig.from_pretrained(folder)
    return config.model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES or any(
        name.endswith("ForImageClassification") for name in config.architectures or []
    )


def _untraceable(model, opset: int, error: Exception) -> ExportError:
    """One line naming the model, the exporter's root cause, and the fallbacks."""
    root = error
    while root.__cause__ is not None:
        root = root.__cause__
    reason = re.sub(r"\x1b\[[0-9;]*m", "", str(root)).strip().splitlines()
    reason = f"{type(root).__name__}: {reason[0] if reason else ''}"[:300]
    architecture = type(model).__name__
    return ExportError(
        f"torch.onnx could not export {architecture} ({model.config.model_type}) at opset {opset} ({reason}). Try "
        f"another opset (`--opset {opset + 2}` or `--opset {opset - 1}`; `opset=` in Python), or keep serving "
        f"this model with PyTorch: its safetensors weights load with plain transformers."
    )


def _export_fp32(model, path: str, opset: int) -> tuple[str, ...]:
    inputs = example_inputs(model)
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence")
    dynamic = {name: {0: batch} if name == "pixel_values" else {0: batch, 1: sequence} for name in inputs}
    # The exporter's notes (axis names, deprecations, torchvision ops it skips) are not the user's business.
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")
    level, registry.level = registry.level, logging.ERROR
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Logits(model).eval(), (), path, kwargs=inputs, input_names=list(inputs), output_names=["logits"],
                opset_version=opset, dynamo=True, dynamic_shapes=dynamic, external_data=False, verbose=False,
            )  # fmt: skip
    except Exception as error:  # the exporter raises many types (TorchExportError, ConversionError, ...)
        raise _untraceable(model, opset, error) from error
    finally:
        registry.setLevel(level)
    _drop_node_metadata(path)
    return tuple(inputs)


def _drop_node_metadata(path: str) -> None:
    """Drop what the exporter records on every node (its PyTorch stack trace, module path and FX node): paths of this
    machine's files, which a published model should not carry, and a third of a small model's int8 file. The shape
    annotations of intermediate values go too (onnxruntime infers them; quantisation writes them back): a tenth of a
    small model's int8 file."""
    import onnx

    def clear(graph):
        for node in graph.node:
            del node.metadata_props[:]
            for attribute in node.attribute:
                for subgraph in [attribute.g, *attribute.graphs] if attribute.HasField("g") else attribute.graphs:
                    clear(subgraph)

    model = onnx.load(path)
    clear(model.graph)
    del model.graph.value_info[:]
    for function in model.functions:
        for node in function.node:
            del node.metadata_props[:]
    onnx.save(model, path)


def _check_fp32(model, path: str) -> float:
    """Max |Δlogit| between the graph and PyTorch on shapes unlike those traced (3 rows, 11 tokens)."""
    inputs = example_inputs(model, batch_size=3, length=11, seed=1)
    with torch.inference_mode():
        expected = model(**inputs).logits.float().numpy()
    difference = float(np.abs(OnnxClassifier(path).logits(inputs) - expected).max())
    if not difference <= EXPORT_TOLERANCE:
        raise ExportError(
            f"The ONNX graph of {type(model).__name__} gives logits {difference:.2g} away from PyTorch's on a batch "
            "shaped unlike the traced one: the exporter fixed a shape or a value it should not have. Try another "
            "`--opset`, or keep serving this model with PyTorch."
        )
    return difference


def _sibling(target: str, role: str) -> str:
    """A free name beside `target` starting with "_", which a push never publishes."""
    return os.path.join(os.path.dirname(target), f"_{os.path.basename(target)}.{role}-{uuid.uuid4().hex[:8]}")


def _swap_in(staged: str, target: str) -> None:
    """Put the folder `staged` at `target`, the old `target` (if any) removed only once the new one is in place."""
    old = None
    if os.path.exists(target):
        old = _sibling(target, "old")
        os.rename(target, old)
    try:
        os.rename(staged, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_onnx(folder: str, quantize: str | None = None, opset: int = DEFAULT_OPSET) -> OnnxExport:
    """Export the classifier saved in `folder` to `folder/onnx/model.onnx` (and `model_quantized.onnx`).

    Args:
        folder (`str`): a local folder written by `save_pretrained` (safetensors weights): a sequence or image
            classifier.
        quantize (`str`, *optional*): `"int8"` also writes the int8 graph; `None` writes the fp32 one alone.
        opset (`int`, *optional*, defaults to 18): the ONNX opset.

    Raises:
        `ExportError` (a `ValueError`): the exporter could not trace or convert the model, or its graph does not
        reproduce PyTorch's logits; the old `onnx/` folder, if any, is left as it was.
    """
    if quantize not in (None, *QUANTIZATIONS):
        raise ValueError(f"`quantize` must be None or one of {', '.join(QUANTIZATIONS)}, got {quantize!r}.")
    require_export_extra()
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder!r} is not a folder; export a model saved locally with `save_pretrained`.")
    model = load_model(folder, is_image_folder(folder), dtype="float32").eval()
    target = os.path.join(folder, ONNX_DIR)
    staged = _sibling(target, "new")
    os.mkdir(staged)  # not `mkdtemp`, whose folder only its owner could read once swapped in
    try:
        model_path = os.path.join(staged, MODEL_FILE)
        input_names = _export_fp32(model, model_path, opset)
        logger.info("Exported %s to ONNX: max |Δlogit| %.2g on unseen shapes.", folder, _check_fp32(model, model_path))
        settings = None
        if quantize:
            settings = quantize_int8(model_path, os.path.join(staged, QUANTIZED_FILE))
            _drop_node_metadata(os.path.join(staged, QUANTIZED_FILE))
        _swap_in(staged, target)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return OnnxExport(
        folder=target, model_path=os.path.join(target, MODEL_FILE),
        quantized_path=os.path.join(target, QUANTIZED_FILE) if quantize else None, input_names=input_names,
        opset=opset, architecture=type(model).__name__, quantization=settings,
    )  # fmt: skip
