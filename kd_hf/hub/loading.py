"""Pull a distilled student back, from a local folder or the Hub, with its explanation card; check repo ids.

```python
from kd_hf.hub import load_student

student = load_student("me/minilm-student")  # or a local folder
student.model, student.processor, student.card["teacher"]
```
"""

import json
import os
from dataclasses import dataclass

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from huggingface_hub.utils import validate_repo_id
from transformers import AutoConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

from ..card import CARD_FILE
from ..models import load_model, load_processor, resolve_model_path


class HubIdError(ValueError):
    """A repo id that the Hub would refuse, found before anything was sent."""


def check_repo_id(name: str, what: str) -> None:
    """Raise a one-line `HubIdError` that names `what` (`--space-id`, `hub_model_id`, ...) if `name` is no repo id."""
    try:
        validate_repo_id(name)
    except ValueError as error:  # huggingface_hub's HFValidationError
        reason = str(error).split(":")[0]  # huggingface_hub's message ends with ": '<name>'."
        raise HubIdError(
            f"{what} {name!r} is not a valid Hub repo id: {reason} (e.g. `user/name`). Nothing was sent."
        ) from None


@dataclass
class LoadedStudent:
    """A distilled student as `load_student` returns it.

    Attributes:
        model (`PreTrainedModel`): the student, a plain transformers classifier in eval mode.
        processor: its tokenizer or image processor.
        card (`dict`): the facts of its explanation card (`explanation_card.json`): `teacher`, `task`, `labels`,
            `results`, `examples`, ...; empty for a model that kd_hf did not make.
    """

    model: PreTrainedModel
    processor: object
    card: dict

    @property
    def is_image_model(self) -> bool:
        return self.card.get("task", "") == "image-classification" or "pixel_values" in self.model.main_input_name


def read_card(name_or_path: str, revision: str | None = None, token: str | bool | None = None) -> dict:
    """The explanation card's facts of a local folder or a Hub repo (`{}` if it has none)."""
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, CARD_FILE)
        if not os.path.isfile(path):
            return {}
    else:
        try:
            path = hf_hub_download(name_or_path, CARD_FILE, revision=revision, token=token)
        except EntryNotFoundError:
            return {}
    with open(path) as file:
        return json.load(file)


def _task_of(name_or_path: str, revision: str | None = None) -> str:
    """A model's task from its config, for models without an explanation card."""
    config = AutoConfig.from_pretrained(name_or_path, revision=revision)
    image = config.model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES or any(
        name.endswith("ForImageClassification") for name in config.architectures or []
    )
    return "image-classification" if image else "text-classification"


def load_student(name_or_path: str, revision: str | None = None, token: str | bool | None = None) -> LoadedStudent:
    """Load a distilled student from a local folder or the Hub, with its processor and its card's facts.

    The model itself needs nothing from kd_hf: `AutoModelForSequenceClassification.from_pretrained(name_or_path)` (or
    `AutoModelForImageClassification`) loads the same weights.
    """
    path = resolve_model_path(name_or_path)
    card = read_card(path, revision, token)
    image = card.get("task", _task_of(path, revision)) == "image-classification"
    model = load_model(name_or_path, image, revision).eval()
    return LoadedStudent(model, load_processor(name_or_path, image), card)
