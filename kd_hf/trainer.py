"""`DistillationTrainer`: a `transformers.Trainer` that trains a student to match a frozen teacher."""

import copy
import inspect
import logging
import os
import tempfile
from collections import defaultdict

import datasets
import torch
import torch.nn.functional as F
from accelerate.utils import DistributedType
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.trainer_utils import EvalLoopOutput

from .card import card_facts, data_facts, write_card
from .checkpoints import ResumableTrainer, check_keys
from .config import DistillationConfig
from .data import TEACHER_CACHE_COLUMNS, TEACHER_PREFIX, WORD_INDEX_COLUMNS, model_inputs
from .ensemble import EnsembleTeacher, ensemble_of, load_teacher
from .evaluation import read_results
from .explain.gradients import first_rows, gradient_attribution
from .hub import PublishingTrainer
from .losses import OUTPUT_RECORDERS, build_losses, loss_requirements
from .metrics import classification_metrics, top1_agreement
from .pairing import align_labels, check_modalities, use_eager_attention
from .teacher_cache import cache_teacher_outputs


logger = logging.getLogger(__name__)

# Trainable parts of the losses (e.g. hidden-state projections) in a checkpoint folder, beside the student's weights.
LOSS_STATE_NAME = "kd_hf_loss_state.safetensors"


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


def prepare_deepspeed(model: PreTrainedModel, accelerator) -> torch.nn.Module:
    """Wrap a frozen model for DeepSpeed: sharded like the student under ZeRO-3, replicated (stage 0) otherwise."""
    import deepspeed

    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    stage = config["zero_optimization"]["stage"]
    hidden_size = getattr(model.config, "hidden_size", None)
    if stage == 3 and hidden_size is not None:
        # The same bucket sizes that accelerate picks for the student, which `auto` cannot resolve for an extra model.
        config["zero_optimization"].update(
            reduce_bucket_size=hidden_size * hidden_size,
            stage3_param_persistence_threshold=10 * hidden_size,
            stage3_prefetch_bucket_size=int(0.9 * hidden_size * hidden_size),
        )
    if stage != 3:
        config["zero_optimization"]["stage"] = 0
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    return engine


class DistillationTrainer(ResumableTrainer, PublishingTrainer):
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
        self._check_tokenizations(kwargs.get("train_dataset"))
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
        else:
            self.teacher = self.accelerator.prepare_model(teacher_model, evaluation_mode=True)
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._prepare_trainable_losses()
        if args.teacher_cache:
            self._cache_teacher_outputs()

    def _cache_teacher_outputs(self) -> None:
        if self.is_deepspeed_enabled:
            raise NotImplementedError(
                "`teacher_cache` needs the whole teacher on each process; turn it off under DeepSpeed."
            )
        teacher = self.accelerator.unwrap_model(self.teacher)
        settings = self._attribution_settings(teacher=True)
        options = dict(
            attributions="attributions" in self.required_outputs,
            attribution_method=settings["method"],
            n_steps=settings["n_steps"],
            special_ids=settings["special_ids"],
            batch_size=self.args.per_device_eval_batch_size,
        )
        # The main process writes the cache files; the others then read them. A dataset whose inputs may change
        # from pass to pass (an on-the-fly transform, a stream) comes back uncached, and the log says so.
        with self.args.main_process_first(desc="teacher cache"):
            if self.train_dataset is not None:
                self.train_dataset = cache_teacher_outputs(self.train_dataset, teacher, self.data_collator, **options)
            if self.eval_dataset is not None:
                self.eval_dataset = cache_teacher_outputs(self.eval_dataset, teacher, self.data_collator, **options)

    def _check_tokenizations(self, dataset) -> None:
        """Token-by-token losses need one tokenization; attributions across two are compared word by word."""
        columns = getattr(dataset, "column_names", None) or []
        if not any(name.startswith(TEACHER_PREFIX) and name not in TEACHER_CACHE_COLUMNS for name in columns):
            return
        positional = sorted(name for name, needs in self.loss_needs.items() if needs - {"attributions"})
        if positional:
            raise ValueError(
                "The teacher and the student tokenize differently, so their token positions do not line up and the "
                f"{positional} loss(es) have nothing to compare; give both the same tokenizer, or keep `soft_label` "
                "and `attribution` (matched word by word)."
            )
        if any("attributions" in needs for needs in self.loss_needs.values()) and "word_index" not in columns:
            raise ValueError(
                "The `attribution` loss across two tokenizers matches attributions word by word: tokenize with "
                "`kd_hf.data.tokenize_for_pair(..., teacher_tokenizer=...)`, which adds the `word_index` columns."
            )

    def _prepare_trainable_losses(self) -> None:
        """Put losses with parameters on the device, DDP-wrapped like the student so their gradients are averaged."""
        self.loss_modules = nn.ModuleDict(
            {name: loss for name, loss in self.losses.items() if isinstance(loss, nn.Module)}
        )
        if not any(True for _ in self.loss_modules.parameters()):
            return
        distributed = self.accelerator.distributed_type
        if distributed in (DistributedType.DEEPSPEED, DistributedType.FSDP):
            raise NotImplementedError(
                f"Losses with trainable parameters ({list(self.loss_modules)}) are not supported under {distributed}; "
                "use DDP (`recipes/accelerate/multi_gpu.yaml`), or `hidden_state` with equal hidden sizes."
            )
        self.loss_modules.to(self.args.device)
        for name, loss in self.loss_modules.items():
            if any(True for _ in loss.parameters()):
                self.losses[name] = self.accelerator.prepare_model(loss)

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        parameters = [p for p in self.loss_modules.parameters() if p.requires_grad]
        if parameters and not any(p is parameters[0] for group in optimizer.param_groups for p in group["params"]):
            optimizer.add_param_group({"params": parameters, "weight_decay": 0.0})
            # Trainer zeroes the student's gradients after each step (`model.zero_grad()`), not these.
            optimizer.register_step_post_hook(lambda *_: self.loss_modules.zero_grad(set_to_none=True))
        return optimizer

    def _save_extra_state(self, folder: str) -> None:
        state = self.loss_modules.state_dict()
        if state:
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in state.items()}, os.path.join(folder, LOSS_STATE_NAME)
            )

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, LOSS_STATE_NAME)
        saved = load_file(path, device=str(self.args.device)) if os.path.isfile(path) else {}
        ours = self.loss_modules.state_dict()
        check_keys(resume_from_checkpoint, self.loss_modules, ours.keys() - saved.keys(), saved.keys() - ours.keys(),
                   what=f"loss parameters ({LOSS_STATE_NAME})")  # fmt: skip
        if saved:
            self.loss_modules.load_state_dict(saved)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the student (never the teacher) and, on the main process, its explanation card next to it."""
        super().save_model(output_dir, _internal_call)
        folder = output_dir or self.args.output_dir
        if self.args.should_save:
            if self.args.peft_config and os.path.abspath(folder) == os.path.abspath(self.args.output_dir):
                self._save_final_adapter(folder)
            self.write_card(folder)

    def _save_final_adapter(self, folder: str) -> None:
        """The end of an adapter run (checkpoints keep the adapter alone): by default the student merged into plain
        weights that load without peft, the adapter moved to `adapter/`; else the adapter with the student's config,
        whose labels plain transformers and kd_hf read."""
        student = self.accelerator.unwrap_model(self.model)
        if not self.args.merge_adapter:
            student.config.save_pretrained(folder)
            return
        adapter = os.path.join(folder, "adapter")
        os.makedirs(adapter, exist_ok=True)
        for name in os.listdir(folder):
            if name.startswith("adapter_"):
                os.replace(os.path.join(folder, name), os.path.join(adapter, name))
        copy.deepcopy(student).merge_and_unload().save_pretrained(folder)

    def write_card(self, folder: str | None = None, results: dict | None = None, compute: dict | None = None) -> str:
        """Render the explanation card (`README.md` and `explanation_card.json`) into `folder`.

        `results` defaults to the folder's `eval_results.json` (as `kd_hf.evaluation.evaluate_student` writes it),
        else to the last evaluation of this run; `compute` holds the run's `student_seconds` (loading, teacher cache
        and training) and `report_seconds` (the evaluation), once known.
        """
        folder = folder or self.args.output_dir
        results = results or read_results(folder) or self._last_evaluation()
        student = self.accelerator.unwrap_model(self.model)
        self._compute = compute or self._compute  # later cards (a push's save) keep them
        if self._data_facts is None:  # read once: the label column of every training example
            labels = [student.config.id2label[i] for i in range(student.config.num_labels)]
            self._data_facts = data_facts(self.train_dataset, self.eval_dataset, labels)
        facts = card_facts(
            self.args, student, results, self.state.global_step, getattr(self, "hub_model_id", None),
            data=self._data_facts, compute=self._compute,
        )  # fmt: skip
        return write_card(folder, facts)

    def create_model_card(self, *args, **kwargs) -> None:
        """Trainer's generic card would replace the explanation card: write ours instead."""
        if self.is_world_process_zero():
            self.write_card()

    def _last_evaluation(self) -> dict | None:
        """The student's figures from this run's last evaluation, shaped like `eval_results.json`."""
        logged = [entry for entry in self.state.log_history if "eval_accuracy" in entry]
        if not logged:
            return None
        last = logged[-1]
        return {
            "task": "image-classification" if self.args.is_image_task else "text-classification",
            "dataset": {
                "name": self.args.dataset_name,
                "config": self.args.dataset_config_name,
                "split": self.args.eval_split,
                "num_examples": len(self.eval_dataset) if self.eval_dataset is not None else None,
            },
            "student": {
                "accuracy": last["eval_accuracy"],
                "macro_f1": last.get("eval_macro_f1"),
                "top1_agreement": last.get("eval_teacher_agreement"),
                "step": last.get("step"),
            },
            "teacher": None,
            "explanations": None,
        }

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        # Keep the teacher's own inputs, which Trainer would drop as unknown to the student's forward.
        teacher_forward = self.accelerator.unwrap_model(self.teacher).forward
        teacher_columns = [TEACHER_PREFIX + name for name in inspect.signature(teacher_forward).parameters]
        self._signature_columns = list(
            dict.fromkeys(self._signature_columns + teacher_columns + [*TEACHER_CACHE_COLUMNS, *WORD_INDEX_COLUMNS])
        )

    def _attribution_settings(self, teacher: bool) -> dict:
        """`gradient_attribution`'s settings for one side: the recipe's method and steps, and the special tokens of
        that side's tokenizer, which the text baseline of integrated gradients keeps (as `kd_hf.explain` does)."""
        tokenizer = (
            getattr(self.data_collator, "teacher_tokenizer", None) if teacher else None
        ) or self.processing_class
        return {
            "method": self.args.attribution_method,
            "n_steps": self.args.attribution_n_steps,
            "special_ids": tuple(getattr(tokenizer, "all_special_ids", ())),
        }

    def _forward_kwargs(self) -> dict:
        return {f"output_{name}": True for name in self.required_outputs - {"attributions"}}

    def teacher_outputs(self, inputs: dict, attribute: bool = False, rows: int | None = None):
        """The teacher's outputs on `inputs` (its own `teacher_` inputs when present), logits in student label order.

        Cached teacher logits and attributions (`kd_hf.teacher_cache`) are used when the batch holds them; the
        teacher then runs only if a loss needs more (attentions, hidden states). With `attribute`, the first `rows`
        examples (all by default) are attributed.
        """
        cached_all = "teacher_logits" in inputs and (not attribute or "teacher_attributions" in inputs)
        if cached_all and not self.required_outputs - {"attributions"} and not self.recorders:
            outputs = SequenceClassifierOutput(logits=inputs["teacher_logits"])
        else:
            outputs = self._run_teacher(inputs, attribute and "teacher_attributions" not in inputs, rows)
        if attribute and "teacher_attributions" in inputs:
            outputs.attributions = inputs["teacher_attributions"]
        if self.teacher_label_order is not None:
            outputs.logits = outputs.logits[:, self.teacher_label_order]
        return outputs

    def _run_teacher(self, inputs: dict, attribute: bool, rows: int | None = None):
        teacher_inputs = model_inputs(inputs, teacher=True) or model_inputs(inputs)
        # Pixels come in the student's precision; a teacher loaded in bf16 needs them in its own.
        dtype = self.accelerator.unwrap_model(self.teacher).dtype
        teacher_inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in teacher_inputs.items()}
        if attribute:
            # The teacher explains its own top-1 class; it needs gradients at its inputs, never in its weights.
            attributions, outputs = gradient_attribution(
                self.teacher,
                teacher_inputs,
                None,
                rows=rows,
                **self._attribution_settings(teacher=True),
                **self._forward_kwargs(),
            )
            outputs = type(outputs)(**{k: _detach(v) for k, v in outputs.items()})
            outputs.attributions = attributions.detach()
        elif self.required_outputs - {"attributions"} or self.recorders or self.is_deepspeed_enabled:
            # Attention maps and hidden states are used as they come, without a copy; `inference_mode` tensors could
            # not be saved for the student's backward pass. DeepSpeed gathers ZeRO-3 shards in place, also refused.
            with torch.no_grad():
                outputs = self.teacher(**teacher_inputs, **self._forward_kwargs())
        else:
            # Logits alone: `inference_mode` keeps no graph, no activations and no version counters for the teacher;
            # the logits (a few numbers per example) are cloned out of it so that any loss may save them.
            with torch.inference_mode():
                outputs = self.teacher(**teacher_inputs, **self._forward_kwargs())
            outputs = type(outputs)(logits=outputs.logits.clone())
        for name, (_, recorder) in self.recorders.items():
            setattr(outputs, name, recorder.pop())
        return outputs

    def _attribute_now(self, model) -> bool:
        """Attribution losses run every `attribution_every` optimizer steps in training, and always in evaluation."""
        if "attributions" not in self.required_outputs:
            return False
        return not model.training or self.state.global_step % self.args.attribution_every == 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """`alpha * CE + (1 - alpha) * sum_i w_i * loss_i`, each part logged; normalised over the accumulated batch.

        The distillation losses are averaged over every example and the cross-entropy over the labelled ones (label
        -100 is no label), so an unlabelled example learns from the teacher's soft labels alone and a batch without
        labels has no hard-label term. In training, a non-finite loss stops the run before its update.
        """
        args = self.args
        student_inputs = model_inputs(inputs)
        labels = inputs.get("labels")
        attribute = self._attribute_now(model)
        rows = args.attribution_batch_size if model.training else None
        teacher_outputs = self.teacher_outputs(inputs, attribute, rows)
        if attribute:
            # One forward pass gives the student's logits and, through a graph kept for the double backward, its
            # attribution of the teacher's top-1 class (on the first `rows` examples).
            target = teacher_outputs.logits.argmax(-1)
            attributions, outputs = gradient_attribution(
                model, student_inputs, target, create_graph=model.training, rows=rows,
                **self._attribution_settings(teacher=False), **self._forward_kwargs(),
            )  # fmt: skip
            outputs.attributions = attributions
        else:
            outputs = model(**student_inputs, **self._forward_kwargs())
        for name, (recorder, _) in self.recorders.items():
            setattr(outputs, name, recorder.pop())

        active = {
            name: loss
            for name, loss in self.losses.items()
            if attribute or "attributions" not in self.loss_needs[name]
        }
        parts = {
            name: self._on_attributed_rows(loss, outputs, teacher_outputs, inputs)
            if "attributions" in self.loss_needs[name]
            else loss(outputs, teacher_outputs, inputs, args)
            for name, loss in active.items()
        }
        weights = dict(zip(args.loss_type, args.loss_weights))
        distillation = (1 - args.alpha) * sum(weights[name] * value for name, value in parts.items())
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


def _detach(value):
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(_detach(v) for v in value)
    return value
