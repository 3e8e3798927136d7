"""Push a distilled student (weights, card, example explanations) and its Gradio Space to the Hub; pull it back.

```python
from kd_hf.hub import load_student, push_student

push_student("outputs/student", "me/minilm-student", space_id="me/minilm-student-demo")
student = load_student("me/minilm-student")  # or a local folder
student.model, student.processor, student.card["teacher"]
```

The token comes from where `huggingface_hub` looks for it (`HF_TOKEN`, `hf auth login`), or is passed in; it is only
ever sent to the Hub, never written into a file.
"""

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError
from transformers import AutoConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

from .card import CARD_FILE, space_readme, write_card
from .pairing import load_model, load_processor, resolve_model_path


logger = logging.getLogger(__name__)

# What a training run leaves in its folder that is not part of the published student: checkpoints (optimizer state),
# pickled training arguments, TensorBoard runs, Trainer's private files, the Space (it has its own repo), and the
# adapter of a student that was merged into plain weights (its base was never saved).
NOT_PUBLISHED = ("checkpoint-*", "_*", "training_args.bin", "runs", "space", "*.pt", "*.pth", "adapter")
SPACE_SOURCE = Path(__file__).resolve().parent.parent / "space"
# huggingface_hub's HTTP errors are OSErrors; its transport's (a refused connection, a timeout) share their base.
HUB_ERRORS = (OSError, *HfHubHTTPError.__bases__)


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


def _stage(folder: str, staging: str, card: dict) -> None:
    """What the model repo receives: the published files of `folder` (hard links where possible, so big weights are
    not copied), with the card rendered again now that it knows its repo id and Space. `folder` is only read."""

    def link(source: str, target: str) -> None:
        try:
            os.link(source, target)
        except OSError:  # another file system, or links not allowed
            shutil.copy2(source, target)

    shutil.copytree(folder, staging, ignore=shutil.ignore_patterns(*NOT_PUBLISHED), copy_function=link)
    if card.get("task"):  # a folder kd_hf made: its card learns where it lives (new files, not the linked ones)
        for name in ("README.md", CARD_FILE):
            if os.path.exists(os.path.join(staging, name)):
                os.unlink(os.path.join(staging, name))
        write_card(staging, card)


def _space_files(space_dir: str, model_id: str, card: dict) -> None:
    """The Space: the app and its requirements from kd_hf's `space/` folder, a README that links the student, and
    kd_hf itself (the app imports its explainers; kd_hf is not on PyPI)."""
    os.makedirs(space_dir)
    shutil.copy(SPACE_SOURCE / "app.py", space_dir)
    shutil.copy(SPACE_SOURCE / "requirements.txt", space_dir)
    shutil.copytree(
        Path(__file__).resolve().parent, os.path.join(space_dir, "kd_hf"), ignore=shutil.ignore_patterns("__pycache__")
    )
    with open(os.path.join(space_dir, "README.md"), "w") as file:
        file.write(space_readme(model_id, card))


def push_student(
    folder: str,
    repo_id: str,
    space_id: str | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload distilled student with kd_hf",
) -> dict[str, str]:
    """Upload a student folder (as `kd-hf distill` leaves it) to `repo_id`, and its demo to the Space `space_id`.

    Repositories are created if needed and updated in place otherwise. Only the published files travel: weights
    (safetensors), config, tokenizer or image processor, README.md (the explanation card, rendered again with the
    repo id and the Space link), `explanation_card.json`, `eval_results.json` and the example explanations; never
    checkpoints or `training_args.bin`. The local folder is only read.

    Returns:
        `dict` with the `model` URL and, if a Space was pushed, the `space` URL.

    Raises:
        `FileNotFoundError`: the folder holds no safetensors weights.
        `ConnectionError`: the Hub could not be reached; nothing local was changed.
    """
    if not os.path.isfile(os.path.join(folder, "config.json")) or not list(Path(folder).glob("*.safetensors")):
        raise FileNotFoundError(
            f"{folder!r} holds no model saved as safetensors (config.json + *.safetensors); push the output folder of "
            "`kd-hf distill`."
        )
    if space_id is not None and not (SPACE_SOURCE / "app.py").is_file():
        raise FileNotFoundError(
            f"kd_hf's Space template is missing ({SPACE_SOURCE}); push from a source checkout of kd_hf "
            "(`pip install -e .`), or leave out the Space to push the model alone."
        )
    api = HfApi(token=token)
    card = read_card(folder)
    card.update(model_id=repo_id, space_id=space_id or card.get("space_id"))
    try:
        with tempfile.TemporaryDirectory() as staging:
            _stage(folder, os.path.join(staging, "model"), card)
            model_url = api.create_repo(repo_id, private=private, exist_ok=True)
            api.upload_folder(
                repo_id=repo_id, folder_path=os.path.join(staging, "model"), commit_message=commit_message
            )
            urls = {"model": str(model_url)}
            if space_id is not None:
                _space_files(os.path.join(staging, "space"), repo_id, card)
                space_url = api.create_repo(
                    space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True
                )
                api.upload_folder(
                    repo_id=space_id, repo_type="space", folder_path=os.path.join(staging, "space"),
                    commit_message=commit_message,
                )  # fmt: skip
                urls["space"] = str(space_url)
    except HUB_ERRORS as error:
        raise ConnectionError(
            f"Pushing {folder!r} to {api.endpoint} failed ({error.__class__.__name__}: {error}). The local folder is "
            "unchanged; check the network and your token (`hf auth login` or HF_TOKEN), then push again: a repeated "
            "push updates the repos in place."
        ) from error
    logger.info("Pushed %s to %s", folder, ", ".join(urls.values()))
    return urls
