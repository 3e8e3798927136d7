"""Deployment: a distilled student exported to ONNX and int8, and the fidelity that survives the export.

```python
from kd_hf.export import default_teacher, export_onnx, export_student, parity_tables

export_onnx("outputs/student", quantize="int8")  # onnx/model.onnx and onnx/model_quantized.onnx, nothing measured
results = export_student("outputs/student", quantize="int8", teacher=default_teacher("outputs/student"))
print(parity_tables(results))
```

`export_student` writes `STUDENT/export_results.json` (strict JSON: `null` where a figure is undefined):

- `task`, `architecture`, `kd_hf_version`;
- `onnx`: `folder` (`onnx`), `opset`, `inputs` (the graph's input names), `output` (`logits`), `dynamic_axes`,
  `quantization` (`weight_type`, `per_channel`, `reduce_range` of onnxruntime's `quantize_dynamic`; `null` for fp32
  alone);
- `dataset`: `name`, `config`, `split`, `num_examples`: what the figures were measured on;
- `teacher`: `name_or_path`, `accuracy` (`null` without a teacher);
- `models`: for `pytorch`, `onnx_fp32` and `onnx_int8` (with `quantize`): `files` (relative to the student folder),
  `size_mb`, `compression` (PyTorch's size / this one's), `accuracy`, `top1_agreement_with_teacher`, `latency_ms`
  and `speedup` (PyTorch's latency / this one's) per `batch_1` / `batch_32`; each graph also
  `max_abs_logit_diff`, `top1_agreement_with_pytorch` and `accuracy_change_points` against `pytorch`;
- `latency`: `device`, `threads`, `repeats`, `warmup`, and the shape of each timed batch;
- `explanations`: occlusion on each model, compared pairwise: `settings`, `num_examples`, `skipped`, and
  `agreement[<model>_vs_<reference>]` (`onnx_int8_vs_pytorch`, `onnx_int8_vs_teacher`, `pytorch_vs_teacher`, ...)
  with, per measure (`spearman`, `kendall`, `top_k_overlap`, `cosine`), the per-example `mean`, its bootstrap
  interval (`low`, `high`), the chance level (`random`) and the number of examples `n`; `null` when skipped.

Modules: `exporter` (trace and check, atomic `onnx/`), `quantize` (int8), `runtime` (onnxruntime sessions), `data` (what the
student was evaluated on), `parity` (logits, latency, sizes), `occlusion` (explanations of the graphs), `report`
(`export_student`); the printed tables are `kd_hf.report.deployment`'s. onnx, onnxscript and onnxruntime come with
`pip install 'kd-hf[export]'`.
"""

from ..report.deployment import parity_tables
from .data import default_teacher, evaluation_config
from .exporter import (
    DEFAULT_OPSET,
    MODEL_FILE,
    ONNX_DIR,
    QUANTIZATIONS,
    QUANTIZED_FILE,
    ExportError,
    OnnxExport,
    export_onnx,
)
from .report import RESULTS_FILE, export_student, read_export_results
from .runtime import OnnxClassifier


__all__ = [
    "DEFAULT_OPSET",
    "MODEL_FILE",
    "ONNX_DIR",
    "QUANTIZATIONS",
    "QUANTIZED_FILE",
    "RESULTS_FILE",
    "ExportError",
    "OnnxClassifier",
    "OnnxExport",
    "default_teacher",
    "evaluation_config",
    "export_onnx",
    "export_student",
    "parity_tables",
    "read_export_results",
]
