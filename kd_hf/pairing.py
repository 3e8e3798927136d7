"""Check that a teacher and a student can be distilled into one another, and build the student.

A pair is usable when both models are classifiers over the same label set (the order may differ: the teacher's
logits are re-indexed into the student's order) and each model gets its own preprocessing of the same examples.
"""

import difflib
import logging
import re
from collections.abc import Callable, Iterable

import torch
from torch import nn
from transformers import (
    CONFIG_MAPPING,
    AutoConfig,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
)

from .models import (  # noqa: F401 (loading lived here: re-exported for existing imports)
    ADAPTER_CONFIG,
    auto_model_class,
    class_names,
    label_config,
    load_model,
    load_processor,
    resolve_model_path,
)
from .student_init import NARROWED_WIDTHS, narrow_teacher_layers, shallower_config, teacher_layer_weights


logger = logging.getLogger(__name__)

_GENERIC_LABEL = re.compile(r"^LABEL_\d+$")


def _reads(model: nn.Module) -> str:
    """What a classifier reads, from its main input (an ensemble reads what its members read)."""
    name = getattr(model, "main_input_name", None)
    if name is None and hasattr(model, "teachers"):
        name = model.teachers[0].main_input_name
    return {"pixel_values": "images", "input_ids": "text"}.get(name, f"`{name}`")


def check_modalities(teacher: nn.Module, student: nn.Module) -> None:
    """Refuse an image teacher with a text student (or the reverse) before any step: they cannot read one batch."""
    teacher_reads, student_reads = _reads(teacher), _reads(student)
    if teacher_reads != student_reads:
        raise ValueError(
            f"The teacher ({teacher.config.model_type}) reads {teacher_reads} but the student "
            f"({student.config.model_type}) reads {student_reads}, so they cannot learn from the same examples; "
            "distil between two image classifiers (with `image_column`) or two text classifiers (`text_columns`)."
        )


def position_limit(model: nn.Module) -> int | None:
    """The most tokens a text model's absolute position embeddings cover; `None` when nothing bounds them."""
    config = model.config
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int) or getattr(config, "position_biased_input", True) is False:
        return None
    for module in model.modules():
        padding = getattr(module, "padding_idx", None)
        if isinstance(getattr(module, "position_embeddings", None), nn.Embedding) and isinstance(padding, int):
            return limit - padding - 1  # RoBERTa-style positions start after the padding index
    return limit


def check_max_length(max_length: int, **models: nn.Module) -> None:
    """Refuse a `max_length` that a model's position embeddings do not cover: its first long example would fail
    inside the embeddings, mid-training. `models` are named by role: `check_max_length(512, student=model)`."""
    for role, model in models.items():
        for member in getattr(model, "teachers", [model]):
            limit = position_limit(member)
            if limit is not None and max_length > limit:
                raise ValueError(
                    f"`max_length` {max_length} is longer than the {role} ({member.config.model_type}) can read: it "
                    f"has {limit} positions, and the first longer example would fail mid-training. Set "
                    f"`max_length: {limit}` or less."
                )


def use_eager_attention(model: PreTrainedModel, role: str, reason: str) -> None:
    """Eager attention returns attention weights and can be differentiated twice; SDPA kernels do neither."""
    has_attention = getattr(model.config, "num_attention_heads", None) is not None
    if has_attention and model.config._attn_implementation != "eager":
        logger.info(
            "Switching the %s from %s to eager attention: %s.", role, model.config._attn_implementation, reason
        )
        model.set_attn_implementation("eager")


def has_named_labels(config: PretrainedConfig) -> bool:
    return not all(_GENERIC_LABEL.match(name) for name in class_names(config))


def align_labels(
    teacher_config: PretrainedConfig, student_config: PretrainedConfig, label_mapping: dict | None = None
) -> list[int] | None:
    """Indices that put the teacher's logits in the student's label order, or `None` when the order already agrees.

    Labels are compared by name (case-insensitively). When one side only has generic names (`LABEL_0`, ...) and the
    counts agree, the order is taken as given and a warning says so.

    Raises:
        `ValueError`: the label sets differ; the message names both lists and the fix.
    """
    teacher_labels = [str((label_mapping or {}).get(name, name)) for name in class_names(teacher_config)]
    student_labels = class_names(student_config)
    fix = (
        "pass `label_mapping` (teacher label -> student label) in the recipe, or give the student head the "
        "teacher's labels"
    )
    if len(teacher_labels) != len(student_labels):
        raise ValueError(
            f"The teacher has {len(teacher_labels)} labels {teacher_labels} but the student has "
            f"{len(student_labels)} {student_labels}; {fix}."
        )
    if not (has_named_labels(teacher_config) or label_mapping) or not has_named_labels(student_config):
        if teacher_labels != student_labels:
            logger.warning(
                "Teacher labels %s and student labels %s cannot be matched by name; assuming the same order. "
                "Set `label_mapping` to make it explicit.",
                teacher_labels,
                student_labels,
            )
        return None
    student_index = {name.lower(): i for i, name in enumerate(student_labels)}
    if set(student_index) != {name.lower() for name in teacher_labels}:
        raise ValueError(f"The teacher's labels {teacher_labels} differ from the student's {student_labels}; {fix}.")
    order = [0] * len(student_labels)
    for teacher_position, name in enumerate(teacher_labels):
        order[student_index[name.lower()]] = teacher_position
    if order == list(range(len(order))):
        return None
    logger.info("Re-ordering teacher logits %s into the student's label order %s.", teacher_labels, student_labels)
    return order


def teacher_layer_indices(num_teacher_layers: int, stride: int = 2, layers: list[int] | None = None) -> list[int]:
    """Teacher layers a student built with `model_init='teacher_layers'` copies: k-1, 2k-1, ... or the given list."""
    if layers is None:
        layers = list(range(stride - 1, num_teacher_layers, stride))
    if not layers or max(layers) >= num_teacher_layers:
        raise ValueError(
            f"Cannot copy teacher layers {layers} from a teacher with {num_teacher_layers} layers; pick indices in "
            f"[0, {num_teacher_layers - 1}] or a `teacher_layers_stride` <= {num_teacher_layers}."
        )
    return layers


def student_from_teacher_layers(
    teacher: PreTrainedModel, layers: list[int], config_overrides: dict | None = None
) -> PreTrainedModel:
    """A shallower copy of `teacher`: the same embeddings and head, and the teacher's `layers` in order.

    This is DistilBERT's initialisation (Sanh et al., 2019, https://huggingface.co/papers/1910.01108), written over
    the state dict so that it works for any encoder whose blocks live under `...layer.<i>.` (BERT, RoBERTa, ViT, DeiT,
    DistilBERT and most others).
    """
    student = type(teacher)(shallower_config(teacher.config, layers, config_overrides))
    state = {key: tensor for key, _, tensor in teacher_layer_weights(teacher, layers)}
    missing, unexpected = student.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"Copying teacher layers left weights unset {missing[:5]} or unused {unexpected[:5]}: this architecture "
            "does not keep its blocks under '...layer.<i>.'. Use `model_init: config` or a student checkpoint."
        )
    return student.to(torch.float32)


# Config keys kd_hf reads itself (the image processor of a model built from a config), even where the class lacks them.
_KD_HF_CONFIG_KEYS = frozenset({"image_size", "num_channels"})


def _check_model_config(overrides: dict, config: PretrainedConfig, source: str) -> None:
    """Refuse `model_config` keys that `config` does not have: transformers would store them unused, and the student
    would quietly keep the size of `source`."""
    model_type = overrides.get("model_type", config.model_type)
    if model_type != config.model_type:
        raise ValueError(
            f"`model_config` has `model_type: {model_type}`, but the student is built on {source}, which keeps its "
            f"type ({config.model_type}); drop `model_type`, or start from a {model_type} checkpoint with "
            "`model_name_or_path`."
        )
    known = set(config.to_dict()) | set(config.attribute_map) | {"num_labels"} | _KD_HF_CONFIG_KEYS
    for key in overrides:
        if key not in known and not hasattr(config, key):
            close = difflib.get_close_matches(key, known, n=1)
            fields = ", ".join(sorted(name for name in known if not name.startswith("_")))
            hint = f"did you mean `{close[0]}`?" if close else f"its fields are {fields}."
            raise ValueError(
                f"`model_config` key `{key}` is not a field of {type(config).__name__} ({source}); {hint}"
            )


# What a student of another type keeps of its teacher's config, so that it reads the teacher's inputs.
_INPUT_FIELDS = {
    False: ("vocab_size", "pad_token_id", "max_position_embeddings", "type_vocab_size"),
    True: ("image_size", "num_channels"),
}


def _config_of_another_type(teacher_config: PretrainedConfig, overrides: dict, image: bool) -> PretrainedConfig:
    """The config of a student whose architecture differs from its teacher's (`model_config: {model_type: albert,
    ...}`, e.g. ALBERT's narrow word table under wider layers): that type's defaults, the teacher's input fields
    (its vocabulary and positions, or its image size and channels: the student reads the teacher's tokenizer or image
    processor), then `overrides`."""
    model_type = overrides["model_type"]
    models = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES if image else MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
    if model_type not in models:
        task = "image" if image else "text"
        raise ValueError(
            f"`model_config` has `model_type: {model_type}`, which has no {task} classification model in "
            f"transformers ({auto_model_class(image).__name__}); choose a type that has, or drop `model_type` to keep "
            f"the teacher's ({teacher_config.model_type})."
        )
    fresh = CONFIG_MAPPING[model_type]()
    _check_model_config(overrides, fresh, f"a new {model_type} config")
    inputs = {name: getattr(teacher_config, name) for name in _INPUT_FIELDS[image]
              if hasattr(teacher_config, name) and hasattr(fresh, name)}  # fmt: skip
    return AutoConfig.for_model(model_type, **{**inputs, **{k: v for k, v in overrides.items() if k != "model_type"}})


def _check_checkpoint_widths(overrides: dict, config: PretrainedConfig, name: str) -> None:
    """A checkpoint's weights fit only its own widths: refuse `model_config` values that change them, before
    transformers fails on every tensor (or, for `num_attention_heads`, quietly splits the same weights differently)."""
    changed = {
        key: (getattr(config, key), overrides[key])
        for key in (*NARROWED_WIDTHS, "vocab_size")
        if key in overrides and hasattr(config, key) and overrides[key] != getattr(config, key)
    }
    if changed:
        listed = ", ".join(f"`{key}` {old} -> {new}" for key, (old, new) in changed.items())
        raise ValueError(
            f"`model_config` changes {listed} of the checkpoint {name!r}, whose weights have its widths. For a "
            "smaller student, use `model_init: teacher_layers` (cut from the teacher's layers) or `model_init: "
            "config` (random weights); with `model_init: checkpoint`, drop these keys."
        )


def build_student(
    args, teacher: PreTrainedModel | None, labels: list[str], calibration: Callable[[], Iterable[dict]] | None = None
) -> PreTrainedModel:
    """The student a recipe asks for (`args.model_init`), with a classification head over `labels`.

    A teacher-layer student narrower than its teacher (`model_config` sets a smaller `hidden_size`,
    `num_attention_heads` or `intermediate_size`) keeps the teacher's most active parts on the batches that
    `calibration()` returns (the teacher's inputs for some training examples; `kd_hf.student_init`).
    """
    image = args.is_image_task
    overrides = dict(args.model_config or {})
    if args.model_init == "teacher_layers":
        _check_model_config(overrides, teacher.config, "the teacher's config")
        num_layers = teacher.config.num_hidden_layers
        layers = teacher_layer_indices(num_layers, args.teacher_layers_stride, args.teacher_layers)
        logger.info("Student initialised from teacher layers %s of %d.", layers, num_layers)
        teacher_labels = class_names(teacher.config)
        if has_named_labels(teacher.config) and [name.lower() for name in teacher_labels] != [
            n.lower() for n in labels
        ]:
            raise ValueError(
                f"`model_init: teacher_layers` copies the teacher's head, but its labels {teacher_labels} are not the "
                f"dataset's {labels} in the same order; use `model_init: config` (a new head) instead."
            )
        overrides.update(label_config(labels))
        if any(
            name in overrides and overrides[name] != getattr(teacher.config, name, None) for name in NARROWED_WIDTHS
        ):
            if calibration is None:
                raise ValueError("A teacher-layer student narrower than its teacher needs `calibration` batches.")
            return narrow_teacher_layers(teacher, layers, overrides, calibration())
        return student_from_teacher_layers(teacher, layers, overrides)
    if args.model_init == "checkpoint":
        if args.model_name_or_path is None:
            raise ValueError(
                "`model_init: checkpoint` needs `model_name_or_path`; or use `model_init: config` with "
                "`model_config`, or `model_init: teacher_layers` with a teacher."
            )
        config = AutoConfig.from_pretrained(
            resolve_model_path(args.model_name_or_path),
            revision=args.model_revision,
            trust_remote_code=args.trust_remote_code,
        )
        _check_model_config(overrides, config, f"the config of {args.model_name_or_path!r}")
        _check_checkpoint_widths(overrides, config, args.model_name_or_path)
        # A checkpoint that already classifies keeps its own head; a bare encoder gets a new one for our labels.
        keep_head = has_named_labels(config) and config.num_labels == len(labels)
        return load_model(
            args.model_name_or_path,
            image,
            args.model_revision,
            args.model_init_kwargs,
            args.trust_remote_code,
            **({} if keep_head else label_config(labels)),
            **overrides,
        )
    base = args.model_name_or_path or args.teacher_model_name_or_path
    if base is not None:
        config = AutoConfig.from_pretrained(resolve_model_path(base), trust_remote_code=args.trust_remote_code)
        if args.model_name_or_path is None and overrides.get("model_type", config.model_type) != config.model_type:
            config = _config_of_another_type(config, overrides, image)
        else:
            _check_model_config(overrides, config, f"the config of {base!r}")
            config.update(overrides)
    else:
        model_type = overrides["model_type"]
        if model_type not in CONFIG_MAPPING:
            close = difflib.get_close_matches(model_type, list(CONFIG_MAPPING.keys()), n=1)
            hint = f"did you mean `{close[0]}`?" if close else "see `transformers.CONFIG_MAPPING` for the types."
            raise ValueError(
                f"`model_config` has `model_type: {model_type}`, which transformers does not know; {hint}"
            )
        _check_model_config(overrides, CONFIG_MAPPING[model_type](), f"a new {model_type} config")
        config = AutoConfig.for_model(overrides.pop("model_type"), **overrides)
    config.update(label_config(labels))
    return auto_model_class(image).from_config(config, trust_remote_code=args.trust_remote_code)


def apply_peft(student: PreTrainedModel, peft_config: dict, image: bool = False):
    """Wrap `student` for adapter training: only the adapter (LoRA by default) and the classification head train.

    `peft_config` holds the fields of a peft config (`peft_type` defaults to `LORA`), e.g. `{r: 8, lora_alpha: 16,
    target_modules: [query, value]}`. The head is trained in full (`modules_to_save`): a new task needs a new head.
    """
    from peft import get_peft_config, get_peft_model

    fields = {"peft_type": "LORA", **peft_config}
    if image:  # peft has no image-classification task type: name the head itself
        fields.setdefault("modules_to_save", [_head_name(student)])
    else:
        fields.setdefault("task_type", "SEQ_CLS")  # which makes peft train the classifier head in full
    try:
        model = get_peft_model(student, get_peft_config(fields))
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"`peft_config` {peft_config} is not a valid peft config ({error}); e.g. `{{r: 8, lora_alpha: 16, "
            "target_modules: [query, value]}` for LoRA on BERT's attention."
        ) from error
    trainable, total = model.get_nb_trainable_parameters()
    logger.info(
        "Training %s of %s student parameters through the adapter (%.2f%%).", trainable, total, 100 * trainable / total
    )
    return model


def _head_name(model: PreTrainedModel) -> str:
    for name in ("classifier", "score", "fc", "head"):
        if isinstance(getattr(model, name, None), torch.nn.Module):
            return name
    raise ValueError(
        f"Cannot find the classification head of {type(model).__name__}; set `modules_to_save` in `peft_config`."
    )
