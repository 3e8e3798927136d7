"""The frozen teacher's side of `DistillationTrainer`: its placement, its inputs, its cached or live outputs.

`prepare_deepspeed` places the teacher under DeepSpeed (sharded like the student under ZeRO-3, replicated otherwise);
`kd_hf.trainer.sharding.shard_for_inference` shards it under FSDP2 (`shard_teacher`).
`FrozenTeacherTrainer` runs it without gradients in its weights, keeps its `teacher_` input columns, fills the
teacher cache (`kd_hf.teacher_cache`), and asks both models for the outputs and attributions the losses need.
"""

import copy
import inspect
import logging

import torch
from torch.distributed.fsdp import FSDPModule
from transformers import PreTrainedModel, Trainer
from transformers.modeling_outputs import SequenceClassifierOutput

from ..data import TEACHER_CACHE_COLUMNS, TEACHER_PREFIX, WORD_INDEX_COLUMNS, model_inputs
from ..explain.gradients import gradient_attribution
from ..teacher_cache import cache_teacher_outputs


logger = logging.getLogger(__name__)


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


class FrozenTeacherTrainer(Trainer):
    """A `Trainer` mixin that runs the frozen teacher beside the student.

    It reads what `DistillationTrainer.__init__` sets: `teacher` (placed, in eval mode), `teacher_label_order`,
    `required_outputs` (the outputs the losses read), `loss_needs` (each loss's) and `recorders` (the forward hooks
    that collect the others).
    """

    def _cache_teacher_outputs(self) -> None:
        if self.is_deepspeed_enabled:
            raise NotImplementedError(
                "`teacher_cache` needs the whole teacher on each process; turn it off under DeepSpeed."
            )
        throughout = [name for name, steps in zip(self.args.loss_type, self.args.loss_steps) if not steps]
        internal = [name for name in throughout if _reads_internals(self.loss_needs[name])]
        if internal and "attributions" not in self.required_outputs:
            # `teacher_outputs` then takes the teacher's logits from its pass at every step.
            logger.warning(
                "`teacher_cache` skipped: the %s loss(es) read the teacher's internals for the whole run, so it runs "
                "at every step and cached logits would go unread. Leave out `teacher_cache`, use it with `soft_label` "
                "and `attribution` alone, or stop those losses early with `loss_steps`.",
                internal,
            )
            return
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

    def _forward_kwargs(self, needs: frozenset[str]) -> dict:
        """The `output_*` flags asking a model for what the losses in `needs` read (hooked outputs come by hooks)."""
        return {f"output_{name}": True for name in (needs & self.required_outputs) - {"attributions"}}

    def teacher_outputs(
        self, inputs: dict, attribute: bool = False, rows: int | None = None, needs: frozenset[str] | None = None
    ):
        """The teacher's outputs on `inputs` (its own `teacher_` inputs when present), logits in student label order.

        Cached teacher logits and attributions (`kd_hf.teacher_cache`) are used when the batch holds them; the
        teacher then runs only if a loss needs more (attentions, hidden states). `needs` is what the losses of this
        step read (`loss_needs`; by default, every loss's). With `attribute`, the first `rows` examples (all by
        default) are attributed.
        """
        if needs is None:
            needs = frozenset().union(*self.loss_needs.values())
        cached_all = "teacher_logits" in inputs and (not attribute or "teacher_attributions" in inputs)
        if cached_all and not _reads_internals(needs):
            outputs = SequenceClassifierOutput(logits=inputs["teacher_logits"])
        else:
            outputs = self._run_teacher(inputs, attribute and "teacher_attributions" not in inputs, rows, needs)
        if attribute and "teacher_attributions" in inputs:
            outputs.attributions = inputs["teacher_attributions"]
        if self.teacher_label_order is not None:
            outputs.logits = outputs.logits[:, self.teacher_label_order]
        return outputs

    def _run_teacher(self, inputs: dict, attribute: bool, rows: int | None, needs: frozenset[str]):
        sharded = isinstance(self.teacher, FSDPModule)  # `shard_teacher`
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
                **self._forward_kwargs(needs),
            )
            outputs = type(outputs)(**{k: _detach(v) for k, v in outputs.items()})
            outputs.attributions = attributions.detach()
        elif _reads_internals(needs) or self.is_deepspeed_enabled or sharded:
            # Attention maps and hidden states are used as they come, without a copy; `inference_mode` tensors could
            # not be saved for the student's backward pass. DeepSpeed and FSDP2 gather shards in place, also refused.
            with torch.no_grad():
                outputs = self.teacher(**teacher_inputs, **self._forward_kwargs(needs))
            if sharded:
                self.teacher.reshard()  # FSDP2 keeps the root's weights gathered when no backward pass follows
        else:
            # Logits alone: `inference_mode` keeps no graph, no activations and no version counters for the teacher;
            # the logits (a few numbers per example) are cloned out of it so that any loss may save them.
            with torch.inference_mode():
                outputs = self.teacher(**teacher_inputs, **self._forward_kwargs(needs))
            outputs = type(outputs)(logits=outputs.logits.clone())
        for name, (_, recorder) in self.recorders.items():
            setattr(outputs, name, recorder.pop())
        return outputs


def _reads_internals(needs: frozenset[str]) -> bool:
    """Whether losses needing `needs` read the teacher's attention maps, hidden states or hooked outputs, which only
    its forward pass at that step gives (a cache holds logits and attributions)."""
    return bool(needs - {"attributions"})


def _detach(value):
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(_detach(v) for v in value)
    return value
