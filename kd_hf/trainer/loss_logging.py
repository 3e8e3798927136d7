"""Per-loss logging: `LossLoggingTrainer`, a `Trainer` mixin of `DistillationTrainer`.

`compute_loss` appends each loss part to `self._metrics[mode]` on the device; the logs and the evaluation metrics
average them once per log (one gather, one device sync). A non-finite loss is explained before training stops.
"""

import torch
from transformers import Trainer
from transformers.trainer_utils import EvalLoopOutput


class LossLoggingTrainer(Trainer):
    """A `Trainer` mixin that adds the mean of each loss part (`ce_loss`, `soft_label_loss`, ...) and the teacher
    agreement to the logs and evaluation metrics.

    It reads `_metrics`, which `DistillationTrainer.__init__` sets to `{"train": defaultdict(list), "eval": ...}`.
    """

    def _non_finite_loss_message(self, model, parts, inputs, outputs, teacher_outputs) -> str:
        """Which loss part is NaN/inf at which step, and what in the batch or the models made it so."""
        bad_parts = [f"`{name}_loss`" for name, value in parts.items() if not torch.isfinite(value).all()]
        causes = []
        bad_inputs = [
            f"`{name}`"
            for name, value in inputs.items()
            if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all()
        ]
        if bad_inputs:
            causes.append(f"the batch's {', '.join(bad_inputs)} hold NaN/inf")
        if not torch.isfinite(teacher_outputs.logits).all():
            causes.append("the teacher's logits are NaN/inf")
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            causes.append("the student's weights hold NaN/inf: an earlier update diverged")
        elif not torch.isfinite(outputs.logits).all():
            causes.append("the student's logits are NaN/inf")
        found = f" ({'; '.join(causes)})" if causes else ""
        return (
            f"Non-finite loss at step {self.state.global_step + 1}: {', '.join(bad_parts) or 'the total loss'} is "
            f"NaN/inf{found}. Training stopped before this step's update: "
            "check the inputs for NaN/inf, lower `learning_rate` (and keep `max_grad_norm` > 0), and with `fp16: "
            "true` (or `teacher_dtype: float16`) try bf16 or fp32, since fp16 overflows above 65504."
        )

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ) -> EvalLoopOutput:
        self._metrics["eval"].clear()
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        for key, value in self._mean_metrics("eval").items():
            output.metrics[f"{metric_key_prefix}_{key}"] = value
        return output

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training and self._metrics["train"]:
            logs = {**logs, **self._mean_metrics("train")}
        super().log(logs, start_time)

    def _mean_metrics(self, mode: str) -> dict[str, float]:
        """Each metric's mean since the last call over every process (one gather, one device sync); then clear them."""
        metrics = self._metrics[mode]
        agreement = metrics.pop("teacher_agreement", None)  # per example, already gathered from every process
        # The losses: one value per step and process, and every process logs after the same number of steps.
        keys = list(metrics)
        means = {}
        if keys:
            local = torch.stack([torch.stack(metrics[key]).float().mean() for key in keys])
            means = dict(zip(keys, self.accelerator.gather(local).view(-1, len(keys)).mean(0).tolist()))
        if agreement:
            means["teacher_agreement"] = torch.cat(agreement).float().mean().item()
        labelled = means.pop("labelled_examples", None)
        if labelled is not None:
            # Cross-entropy per labelled example; none labelled in the window: no figure, rather than 0 or NaN.
            ce_sum = means.pop("ce_loss")
            if labelled > 0:
                means["ce_loss"] = ce_sum / labelled
        metrics.clear()
        return means
