"""Checkpoints that resume exactly: every weight back, from the last complete checkpoint, under the same recipe.

`ResumableTrainer` is the `transformers.Trainer` of `kd-hf train` and the base of `DistillationTrainer`. It loads a
checkpoint through the model's own `from_pretrained` (which renames weights saved under older names, as transformers
5.24 does for ViT) and refuses a checkpoint whose weights do not match the model, where Trainer would only warn and
leave them at their initial values. A save that runs out of disk space says so.

`last_complete_checkpoint` skips checkpoints that a crash or a full disk left half written, and `check_recorded_recipe`
keeps a rerun with another recipe from resuming a run it did not start (`kd_hf_recipe.json`, see `record_recipe`).
"""

import copy
import errno
import json
import logging
import os
import re
import shutil
import zipfile

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from transformers import PreTrainedModel, Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import (
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    is_sagemaker_mp_enabled,
)

from .averaging import WeightAveraging


logger = logging.getLogger(__name__)

TRAINER_STATE_NAME = "trainer_state.json"
RECIPE_NAME = "kd_hf_recipe.json"
_FULL_WEIGHTS = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")

# Recipe fields that do not change the weights a run trains: where it reports, evaluates, saves and publishes, the
# final report and card, the machine it runs on and how fast, and how long (a finished run may be extended).
_NOT_TRAINING = frozenset(
    """output_dir overwrite_output_dir resume_from_checkpoint do_train do_eval do_predict max_steps num_train_epochs
    logging_strategy logging_steps logging_first_step log_on_each_node logging_nan_inf_filter log_level
    log_level_replica include_num_input_tokens_seen disable_tqdm report_to run_name project trackio_space_id
    trackio_bucket_id trackio_static_space_id skip_memory_metrics debug
    eval_strategy eval_steps eval_delay per_device_eval_batch_size prediction_loss_only eval_on_start
    eval_do_concat_batches eval_use_gather_object eval_accumulation_steps include_for_metrics batch_eval_metrics
    bf16_full_eval fp16_full_eval max_eval_samples
    save_only_model save_strategy save_steps save_on_each_node save_total_limit enable_jit_checkpoint
    push_to_hub hub_token hub_private_repo hub_model_id hub_strategy hub_always_push hub_revision hub_space_id
    hub_teacher_id hub_push_teacher
    explanation_examples explanation_method explanation_n_steps card_examples global_examples card_license export_onnx
    use_cpu local_rank ddp_find_unused_parameters ddp_bucket_cap_mb ddp_broadcast_buffers ddp_static_graph
    ddp_backend ddp_timeout dataloader_num_workers dataloader_pin_memory dataloader_persistent_workers
    dataloader_prefetch_factor dataloader_multiprocessing_context torch_empty_cache_steps gradient_checkpointing
    gradient_checkpointing_kwargs activation_checkpointing activation_checkpointing_kwargs torch_compile
    torch_compile_backend torch_compile_mode tf32 teacher_cache shard_teacher trust_remote_code""".split()
)


class ResumableTrainer(Trainer):
    """A `Trainer` whose resumed runs end with the weights of uninterrupted ones (see the module docstring), and that
    ends with the average of its last weights when its arguments ask for it (`weight_averaging_steps`, see
    `kd_hf.averaging`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight_averaging = None
        if getattr(self.args, "weight_averaging_steps", 0):  # plain `TrainingArguments` have no such field
            self.weight_averaging = WeightAveraging(
                self.args.weight_averaging_steps, self.args.weight_averaging_interval
            )
            self.add_callback(self.weight_averaging)

    def train(self, *args, **kwargs):
        output = super().train(*args, **kwargs)
        if self.weight_averaging is not None:
            self.weight_averaging.apply(self.model, self.state.max_steps, self.state.global_step)
        return output

    def _checkpoint_folder(self, trial) -> str:
        return os.path.join(self._get_output_dir(trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")

    def _save_checkpoint(self, model, trial):
        folder = self._checkpoint_folder(trial)
        try:
            if self.args.should_save:
                os.makedirs(folder, exist_ok=True)
            self._save_extra_state(folder)
            if self.weight_averaging is not None and self.args.should_save:
                self.weight_averaging.save(folder)
            super()._save_checkpoint(model, trial)
        except Exception as error:
            if not _no_space_left(error, folder):
                raise
            parent = os.path.dirname(folder)
            raise OSError(
                errno.ENOSPC,
                f"No space left on device while writing {os.path.basename(folder)}; free space in {parent} "
                f"({shutil.disk_usage(parent).free / 2**20:.0f} MiB free now), or save fewer checkpoints "
                "(`save_total_limit`), then rerun: it resumes from the last complete checkpoint and skips this one",
            ) from error

    def _save_extra_state(self, folder: str) -> None:
        """What else a resume needs, written before Trainer's `trainer_state.json` marks the checkpoint complete.
        Called on every process (gathering sharded state is collective); only `args.should_save` ones write."""

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if not self._load_weights_strictly(resume_from_checkpoint, model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self.weight_averaging is not None:
            self.weight_averaging.load(resume_from_checkpoint, self.model)

    def _load_best_model(self):
        if not self._load_weights_strictly(self.state.best_model_checkpoint):
            super()._load_best_model()

    def _load_weights_strictly(self, folder: str, model=None) -> bool:
        """Load a full-weights checkpoint into a single-process model; leave adapters, FSDP and DeepSpeed to Trainer."""
        model = self.model if model is None else model
        distributed = self.is_deepspeed_enabled or self.is_fsdp_enabled or is_sagemaker_mp_enabled()
        readable = _FULL_WEIGHTS if isinstance(model, PreTrainedModel) else (SAFE_WEIGHTS_NAME,)
        if distributed or not any(os.path.isfile(os.path.join(folder, name)) for name in readable):
            return False
        load_checkpoint_weights(model, folder)
        return True


def load_checkpoint_weights(model, folder: str) -> None:
    """Load the weights saved in `folder` into `model` in place; any missing, unexpected or reshaped weight raises.

    A `PreTrainedModel` reads them through its own `from_pretrained` (on CPU, beside the model), so weights saved under
    older names come back under the current ones; its tensors are then copied into `model`'s, which keep their device
    and identity (the optimizer holds them).
    """
    if isinstance(model, PreTrainedModel):
        # A copy of the config: `from_pretrained` may set its attention implementation, which the live model reads.
        loaded, info = type(model).from_pretrained(
            folder, config=copy.deepcopy(model.config), output_loading_info=True, ignore_mismatched_sizes=True
        )
        mismatched = [f"{key} {tuple(saved)} vs {tuple(ours)}" for key, saved, ours in info["mismatched_keys"]]
        check_keys(folder, model, info["missing_keys"], info["unexpected_keys"], mismatched)
        state_dict = loaded.state_dict()
    else:
        state_dict = load_file(os.path.join(folder, SAFE_WEIGHTS_NAME))
    result = model.load_state_dict(state_dict, strict=False)
    check_keys(folder, model, result.missing_keys, result.unexpected_keys)


def check_keys(folder: str, model, missing, unexpected, mismatched=(), what: str = "weights") -> None:
    """Raise if a checkpoint's `what` do not match `model`'s: the keys, the checkpoint and the way out."""
    problems = [
        f"{label} {sorted(keys)[:8]}{' ...' if len(keys) > 8 else ''} ({len(keys)})"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("reshaped", mismatched))
        if keys
    ]
    if problems:
        raise ValueError(
            f"Checkpoint {folder} does not hold the {what} of this {type(model).__name__}: {'; '.join(problems)}. "
            "Resuming would leave them at their initial values. Resume from a checkpoint of the same model and "
            "recipe, or start over: a new `output_dir`, or `overwrite_output_dir: true`."
        )


def _no_space_left(error: BaseException, folder: str) -> bool:
    """ENOSPC, however it surfaced: an `OSError`, safetensors' message, or torch's bare write failure on a full disk."""
    seen = error
    while seen is not None:
        if getattr(seen, "errno", None) == errno.ENOSPC or "No space left on device" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    try:
        return isinstance(error, (OSError, RuntimeError)) and shutil.disk_usage(os.path.dirname(folder)).free < 2**20
    except OSError:
        return False


def checkpoint_problem(folder: str, needs_optimizer: bool = True) -> str | None:
    """Why `folder` cannot be resumed from, or `None` when it is complete.

    Complete means: Trainer's `trainer_state.json` (written last) parses; the model weights (full, sharded, an
    adapter, or an FSDP/DeepSpeed folder) are there; so are the optimizer and scheduler states unless
    `needs_optimizer` is false (`save_only_model`); and every safetensors file parses in full and every torch file is
    a whole zip archive, as a file cut short by a crash or a full disk is not.
    """
    if not os.path.isdir(folder):
        return "no such folder"
    names = set(os.listdir(folder))
    if TRAINER_STATE_NAME not in names:
        return f"no {TRAINER_STATE_NAME}: its save did not finish"
    try:
        with open(os.path.join(folder, TRAINER_STATE_NAME)) as file:
            json.load(file)
    except (OSError, ValueError) as error:
        return f"{TRAINER_STATE_NAME} does not parse ({error})"
    subfolders = {name for name in names if os.path.isdir(os.path.join(folder, name))}
    sharded = any(name.startswith(("pytorch_model_fsdp", "global_step")) for name in subfolders)
    weights = {*_FULL_WEIGHTS, "adapter_model.safetensors", "adapter_model.bin"} & names
    if not weights and not sharded:
        return "no model weights"
    for index in weights & {SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_INDEX_NAME}:
        try:
            with open(os.path.join(folder, index)) as file:
                shards = set(json.load(file)["weight_map"].values())
        except (OSError, ValueError, KeyError) as error:
            return f"{index} does not parse ({error})"
        if shards - names:
            return f"{index} lists missing shards {sorted(shards - names)}"
    if needs_optimizer and not sharded:
        if not {"optimizer.pt", "optimizer.bin"} & names and not any(n.startswith("optimizer") for n in subfolders):
            return "no optimizer state (optimizer.pt)"
        if "scheduler.pt" not in names:
            return "no scheduler state (scheduler.pt)"
    for name in sorted(names - subfolders):
        path = os.path.join(folder, name)
        if name.endswith(".safetensors"):
            try:
                with safe_open(path, framework="pt"):
                    pass
            except (SafetensorError, OSError) as error:
                return f"{name} is cut short or corrupt ({error})"
        elif name.endswith((".pt", ".pth", ".bin")) and not zipfile.is_zipfile(path):
            return f"{name} is cut short or corrupt (not a whole torch archive)"
    return None


def last_complete_checkpoint(output_dir: str, needs_optimizer: bool = True) -> str | None:
    """The newest complete `checkpoint-N` of `output_dir`; each newer, incomplete one is logged with its defect.

    Raises when checkpoints exist but none is complete: starting over would write over them, so the choice is left to
    the user.
    """
    steps = sorted(
        (int(match.group(1)), name)
        for name in (os.listdir(output_dir) if os.path.isdir(output_dir) else [])
        if (match := _CHECKPOINT.match(name)) and os.path.isdir(os.path.join(output_dir, name))
    )
    skipped = []
    for _, name in reversed(steps):
        folder = os.path.join(output_dir, name)
        problem = checkpoint_problem(folder, needs_optimizer)
        if problem is None:
            return folder
        logger.warning("Skipping the incomplete %s: %s.", folder, problem)
        skipped.append(name)
    if skipped:
        raise ValueError(
            f"No complete checkpoint to resume in {output_dir} ({', '.join(skipped)}: see the log for what each "
            "lacks). Delete or move them to start over, or pass `overwrite_output_dir: true` (which deletes them)."
        )
    return None


def training_recipe(args, job: str) -> dict:
    """The fields of `args` that shape the trained weights, as JSON values, without any token; `job` is the command."""
    fields = {key: value for key, value in args.to_dict().items() if key not in _NOT_TRAINING}
    return {"job": job, **json.loads(json.dumps(_without_tokens(fields), sort_keys=True, default=str))}


def _without_tokens(value):
    """Drop credentials nested in `*_kwargs` (`token`, `hub_token`, ...): the recipe file is not a secret."""
    if isinstance(value, dict):
        return {k: _without_tokens(v) for k, v in value.items() if not re.fullmatch(r"(.*_)?token", k.lower())}
    return value


def check_recorded_recipe(args, job: str) -> None:
    """Refuse to resume, in `args.output_dir`, a run of another recipe than `args`; writes nothing.

    Called before anything is loaded, so that a refused rerun costs nothing; `record_recipe` writes the record once
    the recipe has passed every other check.
    """
    folder, recipe = args.output_dir, training_recipe(args, job)
    path = os.path.join(folder, RECIPE_NAME)
    if args.overwrite_output_dir and args.resume_from_checkpoint:
        raise ValueError("`overwrite_output_dir` starts over and `resume_from_checkpoint` resumes: set only one.")
    if args.overwrite_output_dir or not _has_results(folder):
        return
    if not os.path.isfile(path):
        logger.warning("%s has no %s (an older kd_hf run): assuming it ran this recipe.", folder, RECIPE_NAME)
        return
    with open(path) as file:
        stored = json.load(file)
    changed = [key for key in recipe if key in stored and stored[key] != recipe[key]]
    if changed:
        differences = ", ".join(f"`{key}` {stored[key]!r} -> {recipe[key]!r}" for key in changed)
        raise ValueError(
            f"{folder} holds a run of another recipe ({differences}); rerunning would resume its weights "
            "under the new recipe. Use a new `output_dir`, or pass `overwrite_output_dir: true` "
            "(`--overwrite_output_dir true`) to start over, deleting its checkpoints."
        )


def record_recipe(args, job: str) -> None:
    """Record the recipe of the run about to train in `kd_hf_recipe.json`; with `overwrite_output_dir`, first delete
    the previous run's checkpoints and report (and say so), so that it starts over."""
    if not args.should_save:
        return
    folder = args.output_dir
    if args.overwrite_output_dir and os.path.isdir(folder):
        old = [name for name in os.listdir(folder) if _CHECKPOINT.match(name)]
        for name in old:
            shutil.rmtree(os.path.join(folder, name))
        if os.path.isfile(os.path.join(folder, "eval_results.json")):  # the old report, which the card would show
            os.remove(os.path.join(folder, "eval_results.json"))
        if old:
            logger.warning("`overwrite_output_dir`: deleted %s of the previous run in %s.", ", ".join(old), folder)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, RECIPE_NAME), "w") as file:
        json.dump(training_recipe(args, job), file, indent=2, sort_keys=True)


def _has_results(folder: str) -> bool:
    """Whether `folder` holds weights trained by a run: a checkpoint or a saved model."""
    if not os.path.isdir(folder):
        return False
    names = os.listdir(folder)
    return any(_CHECKPOINT.match(name) for name in names) or bool(
        {*_FULL_WEIGHTS, "adapter_model.safetensors"} & set(names)
    )
