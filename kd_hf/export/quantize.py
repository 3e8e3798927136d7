"""int8 graphs: onnxruntime's dynamic quantisation (weights stored in 8 bits, activations quantised on the fly), with
the settings transformers.js uses for its `q8` models (`onnx/model_quantized.onnx`).

```python
from kd_hf.export.quantize import quantize_int8

settings = quantize_int8("onnx/model.onnx", "onnx/model_quantized.onnx")
```

`quantize_dynamic` leaves two things that weigh on small models: the fp32 tensors that no quantised operator reads
(a ViT's position embeddings, biases, layer norms and the weights' own scales: 33 KB of a 115 KB MNIST student), and
the exporter's long value names, which every node repeats, with their shapes (`value_info`). `compact` stores the first
in int8 too, dequantised where they are read: the large ones each with a scale per column, the small ones packed into
one tensor of 64-value rows, each row with its own scale and centre. It names the values `v0`, `v1`, ... (the graph's
inputs and outputs keep theirs) and drops the shapes, which onnxruntime infers again when it loads the graph.
"""

import logging

import numpy as np


def quantization_settings(fp32_path: str) -> dict:
    """transformers.js's `q8` choice for encoders: int8 weights, uint8 where the graph has a convolution
    (onnxruntime-web has no int8 `ConvInteger`), per-channel scales, 7-bit range.

    The 7-bit range keeps the int16 sums of CPUs without VNNI (AVX2) from saturating: on the offline text student it
    brought the int8 graph's largest logit gap from PyTorch's down from 0.18 to 0.02, at the same agreement, accuracy,
    size and speed.
    """
    import onnx

    convolution = any(node.op_type == "Conv" for node in onnx.load(fp32_path, load_external_data=False).graph.node)
    return {"weight_type": "uint8" if convolution else "int8", "per_channel": True, "reduce_range": True}


def quantize_int8(fp32_path: str, int8_path: str, settings: dict | None = None) -> dict:
    """Dynamic int8 quantisation of the weights (activations are quantised on the fly), then `compact`; returns the
    settings."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    settings = {"weight_only_min_elements": WEIGHT_ONLY_MIN_ELEMENTS, **(settings or quantization_settings(fp32_path))}
    weight_type = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[settings["weight_type"]]
    advice = _Without("pre-processing before quantization")  # symbolic shape inference fails on dynamo graphs
    logging.getLogger().addFilter(advice)
    try:
        quantize_dynamic(
            fp32_path, int8_path, weight_type=weight_type, per_channel=settings["per_channel"],
            reduce_range=settings["reduce_range"], extra_options={"EnableSubgraph": True},
        )  # fmt: skip
    finally:
        logging.getLogger().removeFilter(advice)
    compact(int8_path, settings["weight_only_min_elements"])
    return settings


# fp32 tensors at least this large that no quantised operator reads are stored in int8 with a scale per column; smaller
# ones (biases, layer norms, the weights' scales) are packed together, in rows of `PACKED_ROW` values; scalars stay fp32.
WEIGHT_ONLY_MIN_ELEMENTS = 1024


def compact(path: str, min_elements: int = WEIGHT_ONLY_MIN_ELEMENTS) -> None:
    """Rewrite the quantised graph at `path` in place: int8 for its remaining fp32 tensors (scalars aside), short value
    names."""
    import onnx

    model = onnx.load(path)
    opset = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    if opset >= 13:  # `DequantizeLinear` with an axis, `Split` with its sizes as an input
        _weight_only_int8(model.graph, min_elements)
        _pack_small_tensors(model.graph, min_elements)
    del model.graph.value_info[:]
    if not any(attribute.g.node or attribute.graphs for node in model.graph.node for attribute in node.attribute):
        _short_names(model.graph)  # a subgraph (`If`, `Loop`) may read its parent's values by name: those keep theirs
    onnx.checker.check_model(model)
    onnx.save(model, path)


def _weight_only_int8(graph, min_elements: int) -> None:
    """Replace each fp32 initializer of at least `min_elements` values with an int8 one (symmetric, one scale per
    entry of its last axis) and a `DequantizeLinear` that gives the fp32 tensor back under its old name."""
    from onnx import TensorProto, helper, numpy_helper

    for initializer in list(graph.initializer):
        if initializer.data_type != TensorProto.FLOAT or np.prod(initializer.dims) < min_elements:
            continue
        values = numpy_helper.to_array(initializer)
        largest = np.abs(values).reshape(-1, values.shape[-1]).max(0)
        scale = (np.maximum(largest, np.finfo(np.float32).tiny) / 127).astype(np.float32)
        quantized = np.clip(np.round(values / scale), -127, 127).astype(np.int8)
        name = initializer.name
        graph.initializer.remove(initializer)
        graph.initializer.extend([
            numpy_helper.from_array(quantized, f"{name}_int8"), numpy_helper.from_array(scale, f"{name}_scale"),
        ])  # fmt: skip
        dequantize = helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale"], [name], axis=-1)
        graph.node.insert(0, dequantize)


# Operators whose float inputs must stay initializers: onnxruntime reads their scales when it loads the graph.
_QUANTIZATION_OPS = {"DequantizeLinear", "QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"}
PACKED_ROW = 64  # values per scale and centre of the packed tensors


def _pack_small_tensors(graph, max_elements: int, row: int = PACKED_ROW) -> None:
    """Store the fp32 tensors of fewer than `max_elements` values (biases, layer norms, the per-channel scales of the
    quantised weights), scalars aside, in one int8 tensor of `row`-value rows; each row has a scale and a centre, so
    that a layer norm's weights near 1 keep 8 bits of their spread. `DequantizeLinear`, `Add` and `Split` give them
    back under their old names."""
    from onnx import TensorProto, helper, numpy_helper

    readers = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.op_type)
    packed = [
        initializer for initializer in graph.initializer
        if initializer.data_type == TensorProto.FLOAT and 1 < np.prod(initializer.dims) < max_elements
        and initializer.name in readers and not readers[initializer.name] & _QUANTIZATION_OPS
    ]  # fmt: skip
    if len(packed) < 2:
        return
    pieces, sizes, outputs, reshapes = [], [], [], []
    for index, initializer in enumerate(packed):
        values = numpy_helper.to_array(initializer).ravel()
        padding = -len(values) % row
        pieces.append(np.pad(values, (0, padding), mode="edge"))  # a row's range stays its tensor's
        flat = initializer.name if len(initializer.dims) == 1 else f"{initializer.name}_flat"
        sizes.append(len(values))
        outputs.append(flat)
        if padding:
            sizes.append(padding)
            outputs.append(f"packed_padding_{index}")
        if flat != initializer.name:
            shape = numpy_helper.from_array(np.array(initializer.dims, np.int64), f"{initializer.name}_shape")
            reshapes.append((shape, helper.make_node("Reshape", [flat, shape.name], [initializer.name])))
        graph.initializer.remove(initializer)
    rows = np.concatenate(pieces).reshape(-1, row)
    low, high = rows.min(1), rows.max(1)
    centre = ((low + high) / 2).astype(np.float32)[:, None]
    scale = (np.maximum(high - low, np.finfo(np.float32).tiny) / 254).astype(np.float32)
    quantized = np.clip(np.round((rows - centre) / scale[:, None]), -127, 127).astype(np.int8)
    graph.initializer.extend([
        numpy_helper.from_array(quantized, "packed_int8"), numpy_helper.from_array(scale, "packed_scale"),
        numpy_helper.from_array(centre, "packed_centre"),
        numpy_helper.from_array(np.array([-1], np.int64), "packed_flat_shape"),
        numpy_helper.from_array(np.array(sizes, np.int64), "packed_sizes"),
        *(shape for shape, _ in reshapes),
    ])  # fmt: skip
    unpack = [
        helper.make_node("DequantizeLinear", ["packed_int8", "packed_scale"], ["packed_deviation"], axis=0),
        helper.make_node("Add", ["packed_deviation", "packed_centre"], ["packed"]),
        helper.make_node("Reshape", ["packed", "packed_flat_shape"], ["packed_flat"]),
        helper.make_node("Split", ["packed_flat", "packed_sizes"], outputs, axis=0),
        *(reshape for _, reshape in reshapes),
    ]
    for node in reversed(unpack):
        graph.node.insert(0, node)


def _short_names(graph) -> None:
    """Name every value and node of `graph` `v0`, `v1`, ... except the graph's inputs and outputs."""
    kept = {value.name for value in [*graph.input, *graph.output]}
    names = {}

    def short(name: str) -> str:
        if not name or name in kept:
            return name
        return names.setdefault(name, f"v{len(names)}")

    for initializer in graph.initializer:
        initializer.name = short(initializer.name)
    for node in graph.node:
        node.input[:] = [short(name) for name in node.input]
        node.output[:] = [short(name) for name in node.output]
        node.ClearField("name")  # an empty string set is still written
        node.ClearField("doc_string")


class _Without(logging.Filter):
    """Drops the log records that contain `text`."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()
