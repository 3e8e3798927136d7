"""Run an exported classifier with onnxruntime on the CPU, fed the batches a PyTorch classifier takes.

```python
from kd_hf.export import OnnxClassifier

classifier = OnnxClassifier("outputs/student/onnx/model_quantized.onnx")
logits = classifier.logits(tokenizer(["a quiet triumph"], return_tensors="np"))
```
"""

import numpy as np
import torch


def is_image_model(model) -> bool:
    """Whether a classifier reads `pixel_values` (an image classifier) rather than token ids."""
    return model.main_input_name == "pixel_values"


def session_options(threads: int | None = None):
    """onnxruntime's CPU settings: every graph optimisation, `threads` for one operator (its default: one per physical
    core), quiet unless something fails."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # Idle threads sleep instead of spinning: a spinning pool takes the cores from whatever runs next on the machine
    # (PyTorch, timed in turns with it, ran 100x slower beside it on 2 cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
    return options


class OnnxClassifier:
    """An onnxruntime session over an exported classifier whose output is `logits`.

    Args:
        path (`str`): the `.onnx` file.
        threads (`int`, *optional*): threads per operator (see `session_options`).
    """

    def __init__(self, path: str, threads: int | None = None):
        import onnxruntime

        self.path = path
        self.session = onnxruntime.InferenceSession(path, session_options(threads), providers=["CPUExecutionProvider"])
        self.input_names = tuple(node.name for node in self.session.get_inputs())
        self._dtypes = {
            node.name: np.float32 if "float" in node.type else np.int64 for node in self.session.get_inputs()
        }

    def feeds(self, batch) -> dict[str, np.ndarray]:
        """The session's inputs from a batch of tensors or arrays (a tokenizer's or image processor's output, or a
        collated batch): other keys are dropped, and `token_type_ids` the graph takes but the batch lacks are 0s."""
        feeds = {}
        for name in self.input_names:
            value = batch.get(name)
            if value is None and name == "token_type_ids":
                value = np.zeros_like(feeds.get("input_ids", np.asarray(batch["input_ids"])))
            if value is None:
                raise ValueError(f"{self.path} takes `{name}`, which the batch lacks (it has {', '.join(batch)}).")
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu().numpy()
            feeds[name] = np.ascontiguousarray(value, dtype=self._dtypes[name])
        return feeds

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The logits of prepared `feeds` (what `feeds` returned): what the latency figures time."""
        return self.session.run(["logits"], feeds)[0]

    def logits(self, batch) -> np.ndarray:
        """`[batch, num_labels]` float32 logits of a batch."""
        return self(self.feeds(batch))
