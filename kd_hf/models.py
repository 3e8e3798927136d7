"""Load a model and its processor from a Hub id, a local folder or an `offline:` alias: safetensors weights only,
`trust_remote_code` as the recipe says, a PEFT adapter on its base, and one clear error for a path that is not a model.

```python
from kd_hf.models import load_model, load_processor

teacher = load_model("outputs/minilm-rotten-tomatoes", image=False)
tokenizer = load_processor("outputs/minilm-rotten-tomatoes")
```
"""

import glob
import json
import logging
import os

import torch
from huggingface_hub import constants as hub_constants
from safetensors import SafetensorError, safe_open
from transformers import (
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
    except OSError as error:
        if os.path.isdir(path):  # a local folder's error already names the file it lacks
            raise
        raise OSError(_hub_load_message(path, error)) from error


def _hub_load_message(repo_id: str, error: OSError) -> str:
    """Name the Hub id that could not be loaded, and the way to get it."""
    if hub_constants.HF_HUB_OFFLINE:
        fix = (
            f"HF_HUB_OFFLINE is set, so only the local Hugging Face cache is read: download it once where there is "
            f"a connection (`hf download {repo_id}`), or give a local folder."
        )
    else:
        fix = (
            "Check the id and revision, your connection, and for a private or gated repo your token (`hf auth login`)."
        )
    return f"Cannot load the model {repo_id!r}: {error} {fix}"


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
