"""`DistillationTrainer`: a `transformers.Trainer` that trains a student to match a frozen teacher.

This module holds the trainer itself: its set-up and the checks that refuse a pair or a dataset before any step, and
the loss (`compute_loss`), normalised over the accumulated batch. Its mixins hold the rest:

- `teacher`: `FrozenTeacherTrainer`, the teacher's side (placement with `prepare_deepspeed`, its input columns, the
  teacher cache, its outputs and attributions).
- `trainable_losses`: `TrainableLossesTrainer`, losses with parameters, trained with the student and checkpointed as
  `LOSS_STATE_NAME`.
- `loss_logging`: `LossLoggingTrainer`, each loss part in the logs and evaluation metrics.
- `saving`: `CardWritingTrainer`, the student saved with its explanation card.
"""

import logging
import os
import tempfile
from collections import defaultdict

import datasets
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from ..config import DistillationConfig
from ..data import TEACHER_CACHE_COLUMNS, TEACHER_PREFIX, misaligned_rows, model_inputs
from ..ensemble import EnsembleTeacher, ensemble_of, load_teacher
from ..explain.gradients import first_rows, gradient_attribution
from ..hub import PublishingTrainer
from ..losses import OUTPUT_RECORDERS, build_losses, loss_requirements
from ..metrics import classification_metrics, top1_agreement
from ..pairing import align_labels, check_modalities, use_eager_attention
from .loss_logging import LossLoggingTrainer
from .saving import CardWritingTrainer
from .sharding import check_sharding, shard_for_inference, warn_if_fsdp_fell_back, wrap_layers_only
from .teacher import FrozenTeacherTrainer, prepare_deepspeed
from .trainable_losses import LOSS_STATE_NAME, TrainableLossesTrainer


__all__ = ["LOSS_STATE_NAME", "DistillationTrainer", "check_output_dir", "prepare_deepspeed"]

logger = logging.getLogger(__name__)


def check_output_dir(output_dir: str) -> None:
    """Fail at set-up, not at the first checkpoint, when `output_dir` cannot be created or written.

    Nothing is created: the nearest folder that exists on the way to `output_dir` is probed with a temporary file.
    """
    existing = os.path.abspath(os.path.expanduser(output_dir))
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NotADirectoryError(
            f"`output_dir` {output_dir!r} cannot be created: {existing!r} is a file. Set `output_dir` to a folder "
            "path (or move that file away)."
        )
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise PermissionError(
            f"`output_dir` {output_dir!r} is not writable ({existing!r}: {error.strerror}); set `output_dir` to a "
            "folder you can write to, or fix its permissions."
        ) from error


class DistillationTrainer(
    FrozenTeacherTrainer, LossLoggingTrainer, CardWritingTrainer, TrainableLossesTrainer, PublishingTrainer
):
    r"""
    Trains `model` (the student) to match `teacher_model` with the losses named in `args.loss_type`.

    The teacher is frozen: it runs in eval mode under `torch.no_grad()`, is placed on the device without DDP
    (`accelerator.prepare_model(teacher, evaluation_mode=True)`, or sharded under DeepSpeed ZeRO-3), and is never part
    of the student's checkpoints. Inputs whose names start with `teacher_` (see `kd_hf.data.tokenize_for_pair`) go to
    the teacher only, so the two models may use different tokenizers; otherwise both see the same inputs.

    Models are switched to eager attention when a loss needs attention weights or a double backward (the log says
    so), and a pair that cannot support a loss (no attention, different tokenizers or patch grids) is refused here,
    before any step. With `args.teacher_cache` the teacher's logits (and attributions) are computed once and stored
    with the datasets (`kd_hf.teacher_cache`).

    Each logged step reports every loss part (`ce_loss`, `soft_label_loss`, ...), and each evaluation adds the
    student's accuracy, macro-F1 and top-1 agreement with the teacher.

    Args:
        model (`PreTrainedModel`): the student.
        teacher_model (`PreTrainedModel`, `str` or `list[PreTrainedModel]`, *optional*): the teacher, its Hub id /
            local folder, or several teachers combined into a `kd_hf.ensemble.EnsembleTeacher`; defaults to
            `args.teachers` or `args.teacher_model_name_or_path`.
        args (`DistillationConfig`): the run's configuration.
        **kwargs: everything else `transformers.Trainer` takes (`train_dataset`, `processing_class`, ...).
    """

    def __init__(
        self,
        model: PreTrainedModel | None = None,
        teacher_model: PreTrainedModel | str | list[PreTrainedModel] | None = None,
        args: DistillationConfig | None = None,
        compute_metrics=None,
        **kwargs,
    ):
        if args is None or not isinstance(args, DistillationConfig):
            raise TypeError(
                "DistillationTrainer needs `args=DistillationConfig(...)` (it holds the teacher and losses)."
            )
        if teacher_model is None and args.teacher_model_name_or_path is None:
            raise ValueError("No teacher: pass `teacher_model=` or set `teacher_model_name_or_path` in the recipe.")
        if teacher_model is None or isinstance(teacher_model, str):
            teacher_model = load_teacher(args, names=None if teacher_model is None else [teacher_model])
        elif isinstance(teacher_model, (list, tuple)):
            teacher_model = ensemble_of(list(teacher_model), args)
        # Fail before training when the output folder, the inputs or the label spaces disagree with the run, or the
        # pair cannot support a loss.
        if args.should_save:
            check_output_dir(args.output_dir)
        check_modalities(teacher_model, model)
        _check_labels_for_alpha(kwargs.get("train_dataset"), args.alpha)
        self.teacher_label_order = align_labels(teacher_model.config, model.config, args.label_mapping)
        self.losses = build_losses(args, model.config, teacher_model.config)
        self.loss_needs = {name: loss_requirements(name, loss) for name, loss in self.losses.items()}
        required = frozenset().union(*self.loss_needs.values())
        if isinstance(teacher_model, EnsembleTeacher) and required:
            needing = [name for name, needs in self.loss_needs.items() if needs]
            raise ValueError(
                f"Losses {needing} match one network's internals, and there are {len(teacher_model.teachers)} "
                "teachers: with `teachers`, use logit losses (`soft_label`) only."
            )
        self._check_tokenizations(kwargs.get("train_dataset"), kwargs.get("eval_dataset"))
        if "attentions" in required:
            reason = "the attention loss needs attention weights, which other kernels do not return"
            use_eager_attention(model, "student", reason)
            use_eager_attention(teacher_model, "teacher", reason)
        if "attributions" in required:
            reason = "the attribution loss differentiates the student twice, which SDPA kernels cannot"
            use_eager_attention(model, "student", reason)
        # Outputs the models do not return, collected by forward hooks (MiniLMv2's query/key/value projections).
        self.recorders = {
            name: (OUTPUT_RECORDERS[name](model), OUTPUT_RECORDERS[name](teacher_model))
            for name in sorted(required & set(OUTPUT_RECORDERS))
        }
        self.required_outputs = required - set(OUTPUT_RECORDERS)

        super().__init__(model=model, args=args, compute_metrics=compute_metrics or classification_metrics, **kwargs)
        modules = {name: loss for name, loss in self.losses.items() if isinstance(loss, torch.nn.Module)}
        trainable = [name for name, loss in modules.items() if any(True for _ in loss.parameters())]
        fsdp_plugin = self.accelerator.state.fsdp_plugin if self.is_fsdp_enabled else None
        check_sharding(self.accelerator.distributed_type, self.loss_needs, trainable,
                       fsdp_version=fsdp_plugin.fsdp_version if fsdp_plugin else 2)  # fmt: skip
        if fsdp_plugin is not None:
            wrap_layers_only(fsdp_plugin, model)
        warn_if_fsdp_fell_back(bool(args.fsdp), self.accelerator.distributed_type)

        # Our losses are sums over examples divided by the number of labelled examples in the accumulated batch, so
        # that gradient accumulation gives the loss of one large batch: ask Trainer for that count.
        self.model_accepts_loss_kwargs = True
        self._data_facts = None  # the card's training-set sizes and label balance, read once
        self._compute = None  # the card's timings, once the run knows them (`write_card(compute=...)`)

        teacher_model.eval()
        teacher_model.requires_grad_(False)
        if args.teacher_dtype != "auto":
            teacher_model.to(getattr(torch, args.teacher_dtype))
        if self.is_deepspeed_enabled:
            self.teacher = prepare_deepspeed(teacher_model, self.accelerator)
        elif args.shard_teacher and self._can_shard_teacher(teacher_model, fsdp_plugin):
            self.teacher = shard_for_inference(teacher_model, self.accelerator)
        else:
            self.teacher = self.accelerator.prepare_model(teacher_model, evaluation_mode=True)
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._prepare_trainable_losses()
        if args.teacher_cache:
            self._cache_teacher_outputs()

    def _can_shard_teacher(self, teacher_model, fsdp_plugin) -> bool:
        """`shard_teacher` runs under FSDP2, on one teacher, without the teacher cache; elsewhere it is refused, or
        (FSDP asked for on CPU, which runs as DDP) each process keeps the whole teacher, with a warning."""
        if isinstance(teacher_model, EnsembleTeacher):
            raise ValueError("`shard_teacher` shards one teacher; with several (`teachers`), leave it out.")
        if self.args.teacher_cache:
            raise ValueError(
                "`shard_teacher` cannot run with `teacher_cache`: the cache runs the teacher on the main process "
                "alone, which a sharded teacher cannot do. Leave out one of them."
            )
        if fsdp_plugin is not None and fsdp_plugin.fsdp_version == 2:
            return True
        logger.warning(
            "`shard_teacher` shards the teacher under FSDP2 only; this run is %s: each process holds the whole teacher.",
            self.accelerator.distributed_type.value,
        )
        return False

    def _check_tokenizations(self, dataset, eval_dataset=None) -> None:
        """Token-by-token losses need token positions that line up; attributions across two tokenizations are
        compared word by word."""
        columns = getattr(dataset, "column_names", None) or []
        if not any(name.startswith(TEACHER_PREFIX) and name not in TEACHER_CACHE_COLUMNS for name in columns):
            return
        positional = sorted(name for name, needs in self.loss_needs.items() if needs - {"attributions"})
        if positional:
            parts = [dataset, *(eval_dataset.values() if isinstance(eval_dataset, dict) else [eval_dataset])]
            misaligned = [misaligned_rows(part) for part in parts if part is not None]
            if None in misaligned or sum(misaligned):
                rows = "" if None in misaligned else f" ({sum(misaligned)} rows read as different tokens)"
                raise ValueError(
                    f"The teacher and the student tokenize differently{rows}, so their token positions do not line "
                    f"up and the {positional} loss(es) have nothing to compare; give both the same tokenizer (a "
                    "`prune_vocabulary` student reads the texts it was cut from as the teacher does), or keep "
                    "`soft_label` and `attribution` (matched word by word)."
                )
            logger.info("The student's and the teacher's token ids differ, but their token positions line up.")
        if any("attributions" in needs for needs in self.loss_needs.values()) and "word_index" not in columns:
            raise ValueError(
                "The `attribution` loss across two tokenizers matches attributions word by word: tokenize with "
                "`kd_hf.data.tokenize_for_pair(..., teacher_tokenizer=...)`, which adds the `word_index` columns."
            )

    def _losses_now(self, model) -> dict:
        """The losses of this step: those whose `loss_steps` have not run out at the current optimizer step (in
        evaluation too, so that its loss is the one being trained), attribution losses every `attribution_every`
        optimizer steps in training and always in evaluation."""
        step = self.state.global_step
        attribute = not model.training or step % self.args.attribution_every == 0
        return {
            name: loss
            for (name, loss), steps in zip(self.losses.items(), self.args.loss_steps)
            if (not steps or step < steps) and (attribute or "attributions" not in self.loss_needs[name])
        }

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """`alpha * CE + (1 - alpha) * sum_i w_i * loss_i`, each part logged; normalised over the accumulated batch.

        The distillation losses are averaged over every example and the cross-entropy over the labelled ones (label
        -100 is no label), so an unlabelled example learns from the teacher's soft labels alone and a batch without
        labels has no hard-label term. In training, a non-finite loss stops the run before its update.
        """
        args = self.args
        student_inputs = model_inputs(inputs)
        labels = inputs.get("labels")
        active = self._losses_now(model)
        needs = frozenset().union(*(self.loss_needs[name] for name in active))
        attribute = "attributions" in needs
        rows = args.attribution_batch_size if model.training else None
        teacher_outputs = self.teacher_outputs(inputs, attribute, rows, needs)
        if attribute:
            # One forward pass gives the student's logits and, through a graph kept for the double backward, its
            # attribution of the teacher's top-1 class (on the first `rows` examples).
            target = teacher_outputs.logits.argmax(-1)
            attributions, outputs = gradient_attribution(
                model, student_inputs, target, create_graph=model.training, rows=rows,
                **self._attribution_settings(teacher=False), **self._forward_kwargs(needs),
            )  # fmt: skip
            outputs.attributions = attributions
        else:
            outputs = model(**student_inputs, **self._forward_kwargs(needs))
        for name, (recorder, _) in self.recorders.items():
            setattr(outputs, name, recorder.pop())

        parts = {
            name: self._on_attributed_rows(loss, outputs, teacher_outputs, inputs)
            if "attributions" in self.loss_needs[name]
            else loss(outputs, teacher_outputs, inputs, args)
            for name, loss in active.items()
        }
        weights = dict(zip(args.loss_type, args.loss_weights))
        # Zero once every loss's `loss_steps` have run out: the hard labels alone train from there.
        zero = outputs.logits.new_zeros(())
        distillation = (1 - args.alpha) * sum((weights[name] * value for name, value in parts.items()), zero)
        gathered = num_items_in_batch is not None
        if not gathered:
            num_items_in_batch = self._get_num_items_in_batch([inputs], outputs.logits.device, gather=False)
        examples, labelled = num_items_in_batch
        loss = distillation.sum() / examples
        if labels is not None:
            parts["ce"] = F.cross_entropy(outputs.logits.float(), labels, reduction="none", ignore_index=-100)
            # Zero, not 0/0, when no example of the accumulated batch has a label.
            loss = loss + args.alpha * parts["ce"].sum() / labelled.clamp_min(1)
        if gathered and args.average_tokens_across_devices and args.world_size > 1:
            # The counts cover every process's examples and DDP averages gradients over processes.
            loss = loss * args.world_size
        if model.training and not torch.isfinite(loss):
            # One device sync per step (CPU: free), the price of stopping at the first non-finite loss: checking
            # only the logged means would let up to `logging_steps` updates train on NaN first.
            raise FloatingPointError(self._non_finite_loss_message(model, parts, inputs, outputs, teacher_outputs))

        mode = "train" if model.training else "eval"
        for name, value in parts.items():
            # Kept on the device: `.item()` here would wait for it at every step; `_mean_metrics` syncs once per log.
            if name == "ce":  # summed here, divided by the labelled examples of the logging window in `_mean_metrics`
                self._metrics[mode]["ce_loss"].append(value.detach().sum())
                self._metrics[mode]["labelled_examples"].append(labels.ne(-100).sum())
            else:
                self._metrics[mode][f"{name}_loss"].append(value.detach().mean())
        if mode == "eval":
            # Per example, so that padding added to even out the last batch across processes is dropped.
            agreement = top1_agreement(outputs.logits.detach(), teacher_outputs.logits)
            self._metrics[mode]["teacher_agreement"].append(self.accelerator.gather_for_metrics(agreement))
        return (loss, {"logits": outputs.logits}) if return_outputs else loss

    def _on_attributed_rows(self, loss, outputs, teacher_outputs, inputs) -> torch.Tensor:
        """An attribution loss per example. When only the first rows were attributed (`attribution_batch_size`), it
        is computed on those rows and scaled by batch / rows (zeros elsewhere), so that its sum estimates the whole
        batch's and its mean is the rows' mean."""
        rows, batch = len(outputs.attributions), len(outputs.logits)
        if rows == batch:
            return loss(outputs, teacher_outputs, inputs, self.args)

        def cut(output):
            first = first_rows(output, rows)
            first.attributions = output.attributions[:rows]
            return first

        cut_inputs = {
            name: value[:rows] if torch.is_tensor(value) and value.dim() and len(value) == batch else value
            for name, value in inputs.items()
        }
        value = loss(cut(outputs), cut(teacher_outputs), cut_inputs, self.args)
        return F.pad(value, (0, batch - rows)) * (batch / rows)

    def _get_num_items_in_batch(self, batch_samples: list, device, gather: bool = True) -> torch.Tensor:
        """Examples and labelled examples (label != -100) of an accumulated batch, over every process when
        `average_tokens_across_devices`; `compute_loss` averages the distillation losses over the first and the
        cross-entropy over the second, so that gradient accumulation gives the loss of one large batch."""
        examples = sum(_batch_size(batch) for batch in batch_samples)
        labelled = torch.zeros((), dtype=torch.long, device=device)
        for batch in batch_samples:
            if batch.get("labels") is not None:
                labelled = labelled + batch["labels"].ne(-100).sum().to(device)
        counts = torch.stack([torch.tensor(examples, device=device), labelled])
        if gather and self.args.average_tokens_across_devices and self.args.world_size > 1:
            counts = self.accelerator.gather(counts).view(-1, 2).sum(0)
        return counts

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        if inputs.get("labels") is None:
            # Unlabelled examples (all -100) still have their distillation losses and agreement with the teacher,
            # which Trainer computes only for batches with labels.
            inputs = {**inputs, "labels": torch.full((_batch_size(inputs),), -100, dtype=torch.long)}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)


def _check_labels_for_alpha(dataset, alpha: float) -> None:
    """`alpha: 1` trains on hard labels alone: refuse a training set that has none."""
    if alpha < 1 or not isinstance(dataset, datasets.Dataset):
        return
    if "labels" in dataset.column_names and set(dataset.unique("labels")) - {-100}:
        return
    raise ValueError(
        "`alpha` is 1, which trains on hard labels alone, but the training set has no labels: lower `alpha` (0 "
        "trains on the teacher's soft labels alone), or give labelled data."
    )


def _batch_size(batch: dict) -> int:
    return len(next(iter(model_inputs(batch).values())))
