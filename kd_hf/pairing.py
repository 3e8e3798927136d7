"""Load a teacher and a student and check that they can be distilled into one another.

A pair is usable when both models are classifiers over the same label set (the order may differ: the teacher's
logits are re-indexed into the student's order) and each model gets its own preprocessing of the same examples.
"""

import copy
import difflib
import glob
import json
import logging
import os
import re

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import (
    CONFIG_MAPPING,
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
)

from .data.offline import offline_model_path
from .data.vision import default_image_processor


logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
_GENERIC_LABEL = re.compile(r"^LABEL_\d+$")
_LAYER_KEY = re.compile(r"^(.*\.layers?\.)(\d+)(\..*)$")


def resolve_model_path(name_or_path: str) -> str:
    """Map an `offline:` alias to its folder and reject local paths that do not exist.

    A string that starts like a path (`/`, `.`, `~`) or has more than one `/` cannot be a Hub id, so a missing folder
    is reported here instead of as a confusing Hub error.
    """
    path = offline_model_path(name_or_path)
    if os.path.isdir(path):
        if not any(os.path.isfile(os.path.join(path, name)) for name in ("config.json", ADAPTER_CONFIG)):
            raise FileNotFoundError(
                f"Model folder {path!r} has no config.json (nor a PEFT adapter_config.json); point to a folder saved "
                "with `save_pretrained`, or to a Hub id like 'user/model'."
            )
        return path
    if (
        path.startswith(("/", ".", "~"))
        or path.count("/") > 1
        or os.sep in path.replace("/", "")
        or os.path.exists(path)
    ):
        raise FileNotFoundError(
            f"Model path {path!r} does not exist. Give a local folder that holds config.json (e.g. one written by "
            "`kd-hf train`), a Hub id like 'user/model', or an offline alias like 'offline:all-MiniLM-L6-v2'."
        )
    return path


def auto_model_class(image: bool):
    return AutoModelForImageClassification if image else AutoModelForSequenceClassification


def load_model(
    name_or_path: str,
    image: bool = False,
    revision: str | None = None,
    init_kwargs: dict | None = None,
    trust_remote_code: bool = False,
    dtype: str = "auto",
    **config_kwargs,
) -> PreTrainedModel:
    """Load a text or image classifier from safetensors weights; `config_kwargs` update its config (e.g. labels).

    `dtype` (`bfloat16`, ...) loads the weights straight into that precision; `auto` leaves it to `init_kwargs`.
    """
    path = resolve_model_path(name_or_path)
    base = adapter_base(path, revision)
    if base is not None:
        return _load_adapter(path, base, image, revision, init_kwargs, trust_remote_code, dtype, **config_kwargs)
    init_kwargs = {**(init_kwargs or {}), **({"dtype": getattr(torch, dtype)} if dtype != "auto" else {})}
    try:
        return auto_model_class(image).from_pretrained(
            path,
            revision=revision,
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
            **init_kwargs,
            **config_kwargs,
        )
    except SafetensorError as error:
        raise OSError(_corrupt_weights_message(path, error)) from error


def _corrupt_weights_message(path: str, error: Exception) -> str:
    """Name the weights file that cannot be read (a local folder's), and how to get a whole one."""
    files = sorted(glob.glob(os.path.join(path, "*.safetensors"))) if os.path.isdir(path) else []
    unreadable = [name for name in files if not _readable_safetensors(name)]
    if files:
        return (
            f"{', '.join(unreadable or files)} is corrupt or incomplete ({error}), as an interrupted download or "
            "save leaves it: download it again (delete the folder and fetch it anew), or, for a model you trained, "
            "train it again (or point to one of its checkpoint folders)."
        )
    return (
        f"The weights of {path!r} are corrupt or incomplete ({error}): download them again, e.g. "
        f"`hf download {path} --force-download`, or delete the model from the Hugging Face cache."
    )


def _readable_safetensors(path: str) -> bool:
    try:
        with safe_open(path, framework="pt") as weights:
            for name in weights.keys():
                weights.get_slice(name)
    except (SafetensorError, OSError):
        return False
    return True


def adapter_base(name_or_path: str, revision: str | None = None) -> str | None:
    """The base model of a PEFT adapter (a folder or Hub repo with `adapter_config.json`); `None` for a full model."""
    from transformers.utils import find_adapter_config_file

    config_file = find_adapter_config_file(name_or_path, revision=revision)
    if config_file is None:
        return None
    with open(config_file) as file:
        return json.load(file)["base_model_name_or_path"]


def _load_adapter(path, base, image, revision, init_kwargs, trust_remote_code, dtype, **config_kwargs):
    """A PEFT adapter over its base model, merged into plain weights: a frozen teacher runs faster merged, and a
    merged student is what plain transformers loads."""
    from peft import PeftModel

    try:  # the adapter's own config.json (kd_hf saves one) names the labels of the head it trained
        labels = label_config(class_names(AutoConfig.from_pretrained(path, revision=revision)))
    except (OSError, ValueError):  # no config.json beside the adapter
        labels = {}
    model = load_model(base, image, None, init_kwargs, trust_remote_code, dtype, **{**labels, **config_kwargs})
    logger.info("%s is a PEFT adapter over %s: loaded and merged into its weights.", path, base)
    return PeftModel.from_pretrained(model, path, revision=revision).merge_and_unload()


def load_processor(model_or_path: PreTrainedModel | str, image: bool = False, trust_remote_code: bool = False):
    """The tokenizer or image processor saved with a model (or with an adapter's base model); a default one for
    config-built vision models."""
    if isinstance(model_or_path, PreTrainedModel):
        config = model_or_path.config
        path = config.name_or_path
    else:
        path = resolve_model_path(model_or_path)
        base = adapter_base(path)
        if base is not None and not _has_processor(path, image):
            path = resolve_model_path(base)
        source = resolve_model_path(base) if base is not None else path
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    if image:
        try:
            return AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError):
            logger.info("No image processor saved with %r: using a default one for its config.", path or "the model")
            return default_image_processor(config)
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


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


def _has_processor(path: str, image: bool) -> bool:
    try:
        (AutoImageProcessor if image else AutoTokenizer).from_pretrained(path)
    except (OSError, ValueError):
        return False
    return True


def label_config(labels: list[str]) -> dict:
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {n: i for i, n in enumerate(labels)},
    }


def class_names(config: PretrainedConfig) -> list[str]:
    """A classifier's class names in id order (`LABEL_0`, ... when its config has no names)."""
    return [str(config.id2label[i]) for i in range(config.num_labels)]


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
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    for key, value in (config_overrides or {}).items():
        setattr(config, key, value)
    student = type(teacher)(config)
    new_index = {str(old): str(new) for new, old in enumerate(layers)}
    state = {}
    for key, tensor in teacher.state_dict().items():
        match = _LAYER_KEY.match(key)
        if match:
            if match.group(2) not in new_index:
                continue
            key = f"{match.group(1)}{new_index[match.group(2)]}{match.group(3)}"
        state[key] = tensor
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


def build_student(args, teacher: PreTrainedModel | None, labels: list[str]) -> PreTrainedModel:
    """The student a recipe asks for (`args.model_init`), with a classification head over `labels`."""
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
        return student_from_teacher_layers(teacher, layers, {**overrides, **label_config(labels)})
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
