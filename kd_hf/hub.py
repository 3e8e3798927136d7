"""Push a distilled student (weights, card, example explanations) and its Gradio Space to the Hub; pull it back.

```python
from kd_hf.hub import load_student, push_student

push_student("outputs/student", "me/minilm-student", space_id="me/minilm-student-demo")
student = load_student("me/minilm-student")  # or a local folder
student.model, student.processor, student.card["teacher"]
```

The token comes from where `huggingface_hub` looks for it (`HF_TOKEN`, `hf auth login`), or is passed in; it is only
ever sent to the Hub, never written into a file. A push checks every repo id before it sends anything, publishes the
regular files of the folder only (never a symbolic link), leaves each repo holding exactly what it published, and gives
up on a Hub that does not answer within `timeout` seconds.
"""

import copy
import fnmatch
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, ModelCard, ModelCardData, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError
from huggingface_hub.utils import get_session, validate_repo_id
from transformers import AutoConfig, PreTrainedModel, Trainer
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES
from transformers.trainer_utils import HubStrategy, SaveStrategy

from .card import CARD_FILE, model_source, space_readme, teacher_sources, write_card
from .evaluation import RESULTS_FILE, write_results
from .models import load_model, load_processor, resolve_model_path


logger = logging.getLogger(__name__)

# What a training run leaves in its folder (or a checkpoint in its own) that is not part of the published student:
# checkpoints, optimizer/scheduler/RNG state, pickled training arguments and the recipe record (local paths),
# Trainer's state, the loss projections (`kd_hf.trainer.LOSS_STATE_NAME`), TensorBoard runs, Trainer's private files,
# the Space (it has its own repo), and the adapter of a student that was merged into plain weights (its base was never
# saved).
NOT_PUBLISHED = (
    "checkpoint-*", "last-checkpoint", "_*", "training_args.bin", "kd_hf_recipe.json", "trainer_state.json",
    "kd_hf_loss_state.safetensors", "runs", "space", "*.pt", "*.pth", "adapter",
)  # fmt: skip
SPACE_SOURCE = Path(__file__).resolve().parent.parent / "space"
# huggingface_hub's HTTP errors are OSErrors; its transport's (a refused connection, a timeout) share their base.
HUB_ERRORS = (OSError, *HfHubHTTPError.__bases__)
# Seconds a push waits for the Hub to connect, take each part of an upload, or answer; huggingface_hub's own client
# waits forever, so a Hub that accepts connections and never answers would hang the push (and a training run's end).
PUSH_TIMEOUT = 60.0


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


def _copy_regular_files(source: str, target: str, ignore: tuple[str, ...]) -> list[str]:
    """Copy the regular files under `source` into `target` (hard links where possible, so big weights are not copied),
    leaving out every file or folder whose name matches a pattern of `ignore`, and every symbolic link: a link could
    bring in files from anywhere (`~/.ssh`), and even one that stays inside duplicates a file. Returns the paths left
    out for being links or not regular files (FIFOs, sockets), for the caller to report. `source` is only read."""
    skipped = []
    os.makedirs(target, exist_ok=True)
    for root, folders, names in os.walk(source):  # never follows a link to a folder
        relative = os.path.relpath(root, source)
        kept = []
        for name in sorted(folders):
            if any(fnmatch.fnmatch(name, pattern) for pattern in ignore):
                continue
            if os.path.islink(os.path.join(root, name)):
                skipped.append(os.path.normpath(os.path.join(relative, name)))
            else:
                kept.append(name)
                os.makedirs(os.path.join(target, relative, name), exist_ok=True)
        folders[:] = kept
        for name in sorted(names):
            if any(fnmatch.fnmatch(name, pattern) for pattern in ignore):
                continue
            path = os.path.join(root, name)
            if os.path.islink(path) or not os.path.isfile(path):
                skipped.append(os.path.normpath(os.path.join(relative, name)))
                continue
            copy = os.path.join(target, relative, name)
            try:
                os.link(path, copy)
            except OSError:  # another file system, or links not allowed
                shutil.copy2(path, copy)
    return skipped


def _stage(folder: str, staging: str, card: dict) -> list[str]:
    """What the model repo receives: the published files of `folder`, with the card (`_published_card`) rendered
    again now that it knows its repo id, its Space and its teachers' Hub ids, and the report naming the models as the
    card does, never by a local path. Returns the links and other non-regular files left out. `folder` is only read."""
    skipped = _copy_regular_files(folder, staging, NOT_PUBLISHED)
    if card.get("task"):  # a folder kd_hf made: its card learns where it lives
        # Both write new files renamed over the staged ones (`os.replace`), never through their links to `folder`.
        if os.path.exists(os.path.join(staging, RESULTS_FILE)) and card.get("results"):
            write_results(card["results"], staging)
        write_card(staging, card)
    return skipped


def _teacher_repos(card: dict, folder: str, repo_id: str, teacher_repo_id: str | None, push_teacher: bool,
                   space_id: str | None) -> list[tuple[dict, str | None]]:  # fmt: skip
    """Each teacher of the card with the Hub id it is published under: the one it came from, or, for a local
    teacher, `teacher_repo_id` (default `<repo_id>-teacher`), to be uploaded from its folder (None: not published).
    Raises, before anything is sent, when the Space would lack a teacher that cannot be published."""
    sources = teacher_sources(card)
    local = [source for source in sources if source["hub_id"] is None]
    if teacher_repo_id is not None and len(local) != 1:
        raise ValueError(
            f"`--teacher-repo-id` names the repo of the student's one local teacher, and {folder!r} has "
            f"{len(local)}; leave it out (local teachers go to `{repo_id}-teacher-1`, `-2`, ...)."
        )
    where = os.path.join(folder, CARD_FILE)
    plan = []
    for source in sources:
        if source["hub_id"] is not None:
            plan.append((source, source["hub_id"]))
            continue
        if not push_teacher:
            if space_id is not None:
                raise ValueError(
                    f"The Space shows the teacher beside the student, but the teacher {source['name']!r} is a local "
                    "model and `--no-teacher` keeps it local. Publish it (leave out `--no-teacher`: it goes to "
                    f"`{repo_id}-teacher`, or to `--teacher-repo-id`), or push the student alone without "
                    "`--space-id`. Nothing was sent."
                )
            plan.append((source, None))
            continue
        number = next(i for i, other in enumerate(local, 1) if other is source)  # among the local teachers
        target = teacher_repo_id or (f"{repo_id}-teacher" if len(local) == 1 else f"{repo_id}-teacher-{number}")
        check_repo_id(target, "--teacher-repo-id")
        teacher_folder = source.get("folder")
        if teacher_folder is None or not _has_weights(teacher_folder):
            if teacher_repo_id is not None:  # published already: the push checks that the repo exists
                plan.append(({**source, "folder": None}, target))
                continue
            recorded = teacher_folder or f"not recorded in {where}"
            raise FileNotFoundError(
                f"The teacher {source['name']!r} was a local model, and its folder ({recorded}) holds no safetensors "
                "weights now, so it cannot be published beside the student. Restore the folder and push again, or "
                "publish the teacher yourself (`kd-hf push TEACHER_FOLDER --repo-id me/teacher`, or `hf upload`) and "
                "pass `--teacher-repo-id me/teacher`; or push the student alone with `--no-teacher` and no "
                "`--space-id`. Nothing was sent."
            )
        plan.append((source, target))
    return plan


def _has_weights(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "config.json")) and any(Path(folder).glob("*.safetensors"))


def _published_card(card: dict, repo_id: str, space_id: str | None, plan: list[tuple[dict, str | None]]) -> dict:
    """The card as the Hub sees it: its repo id, its Space, and teachers named by their Hub ids (no local path)."""
    published = copy.deepcopy(card)
    published.update(model_id=repo_id, space_id=space_id or card.get("space_id"))
    if not plan:
        return published
    names = {source["name"]: hub_id for source, hub_id in plan if hub_id}
    published["teacher_sources"] = [
        {**source, "name": hub_id or os.path.basename(source["name"].rstrip("/")), "hub_id": hub_id, "folder": None}
        for source, hub_id in plan
    ]
    shown = [source["name"] for source in published["teacher_sources"]]
    if published.get("teachers"):
        published["teachers"] = shown
    published["teacher"] = shown[0]
    results = published.get("results") or {}
    if results.get("teacher"):
        teacher = results["teacher"]["name_or_path"]
        results["teacher"]["name_or_path"] = names.get(teacher, " + ".join(shown) if " + " in teacher else shown[0])
    if results.get("student"):
        results["student"]["name_or_path"] = repo_id
    return published


def _teacher_files(source: dict, staging: str, repo_id: str, student_card: dict) -> None:
    """A local teacher as its repo receives it: its published files, and a card linking the student if it has none."""
    _copy_regular_files(source["folder"], staging, NOT_PUBLISHED)
    if os.path.isfile(os.path.join(staging, "README.md")):
        return
    dataset = student_card.get("dataset", {}).get("hub_id")
    data = ModelCardData(
        base_model=source.get("base"), datasets=[dataset] if dataset else None, license=student_card.get("license"),
        library_name="transformers", pipeline_tag=student_card.get("task"), tags=["kd_hf", "teacher"],
    )  # fmt: skip
    student = student_card["model_id"]
    base = (
        f", fine-tuned from [{source['base']}](https://huggingface.co/{source['base']})" if source.get("base") else ""
    )
    ModelCard(
        f"---\n{data.to_yaml()}\n---\n\n# {repo_id.split('/')[-1]}\n\nThe teacher of "
        f"[{student}](https://huggingface.co/{student}), a student distilled from it with kd_hf{base}. Its accuracy "
        "next to the student's, and how alike their explanations are, are in the student's card.\n"
    ).save(os.path.join(staging, "README.md"))


def _space_files(space_dir: str, model_id: str, card: dict) -> None:
    """The Space: the app and its requirements from kd_hf's `space/` folder, a README that links the student, and
    kd_hf itself (the app imports its explainers; kd_hf is not on PyPI)."""
    os.makedirs(space_dir)
    shutil.copy(SPACE_SOURCE / "app.py", space_dir)
    shutil.copy(SPACE_SOURCE / "requirements.txt", space_dir)
    _copy_regular_files(
        str(Path(__file__).resolve().parent), os.path.join(space_dir, "kd_hf"), ("__pycache__", "*.pyc")
    )
    with open(os.path.join(space_dir, "README.md"), "w") as file:
        file.write(space_readme(model_id, card))


@contextmanager
def _answer_within(seconds: float) -> Iterator[None]:
    """Give every request of huggingface_hub's shared HTTP client at most `seconds` to connect, to send each part and
    to receive each part of the answer, while the block runs. Its requests have no timeout by default, and some pass
    `timeout=None` explicitly (listing a repo's files), so the bound is set on each request, through httpx's `timeout`
    request extension, by a request hook; a shorter timeout a request asks for itself is kept."""

    def bound(request) -> None:
        asked = request.extensions.get("timeout") or {}
        request.extensions["timeout"] = {
            phase: min(asked.get(phase) or seconds, seconds) for phase in ("connect", "read", "write", "pool")
        }

    session = get_session()
    hooks = session.event_hooks
    session.event_hooks = {**hooks, "request": [*hooks.get("request", []), bound]}
    try:
        yield
    finally:
        session.event_hooks = hooks


def push_student(
    folder: str,
    repo_id: str,
    space_id: str | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload distilled student with kd_hf",
    timeout: float = PUSH_TIMEOUT,
    teacher_repo_id: str | None = None,
    push_teacher: bool = True,
) -> dict[str, str]:
    """Upload a student folder (as `kd-hf distill` leaves it) to `repo_id`, its teacher if it was a local model, and
    its demo to the Space `space_id`.

    The card (`base_model`, its links) and the Space name the teacher by a Hub id a visitor can open: the one it was
    loaded from, or, for a teacher that was a local folder when the student was trained (recorded in the card then,
    never guessed from the current directory), the repo this push publishes it to, `teacher_repo_id` (default
    `<repo_id>-teacher`). `push_teacher=False` keeps a local teacher local, and then refuses the Space, which could
    not show it.

    Repositories are created if needed and updated in place otherwise. Only the published files travel: the regular
    files of the folder (never a symbolic link: the log names those left out) except checkpoints, optimizer and
    Trainer state, `training_args.bin` and TensorBoard runs, that is weights (safetensors), config, tokenizer or image
    processor, README.md (the explanation card, rendered again with the repo id and the Space link),
    `explanation_card.json`, `eval_results.json` and the example explanations. Each repo then holds exactly what was
    published: a file that an earlier push sent and the folder no longer has is deleted (`.gitattributes` stays).
    The local folder is only read.

    Args:
        timeout (`float`, *optional*, defaults to 60):
            seconds to wait for the Hub to connect, take each part of an upload, or answer, before giving up.

    Returns:
        `dict` with the `model` URL and, if they were pushed, the `teacher` and `space` URLs.

    Raises:
        `HubIdError` (a `ValueError`): `repo_id`, `space_id`, `teacher_repo_id` or the card's teacher is not a valid
            repo id; nothing was sent.
        `ValueError`: a Space was asked for with a local teacher kept local (`push_teacher=False`), or
            `teacher_repo_id` names a repo that does not exist for a teacher whose folder is gone; nothing was sent.
        `FileNotFoundError`: the folder, or a local teacher's folder, holds no safetensors weights.
        `ConnectionError`: the Hub could not be reached, or did not answer in time; nothing local was changed.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder!r} is not a folder; push the output folder of `kd-hf distill`.")
    card = read_card(folder)
    check_repo_id(repo_id, "repo_id")
    if space_id is not None:
        check_repo_id(space_id, "space_id")
    for source in teacher_sources(card):
        if source["hub_id"] is not None:  # the card's `base_model`, and a model of the Space
            check_repo_id(source["hub_id"], f"The teacher (in {os.path.join(folder, CARD_FILE)})")
    plan = _teacher_repos(card, folder, repo_id, teacher_repo_id, push_teacher, space_id)
    if space_id is not None and not (SPACE_SOURCE / "app.py").is_file():
        raise FileNotFoundError(
            f"kd_hf's Space template is missing ({SPACE_SOURCE}); push from a source checkout of kd_hf "
            "(`pip install -e .`), or leave out the Space to push the model alone."
        )
    api = HfApi(token=token)
    card = _published_card(card, repo_id, space_id, plan)
    uploads = [(source, hub_id) for source, hub_id in plan if hub_id and source.get("folder")]
    with tempfile.TemporaryDirectory() as staging:
        model_dir, space_dir = os.path.join(staging, "model"), os.path.join(staging, "space")
        skipped = _stage(folder, model_dir, card)
        if skipped:
            logger.warning(
                "Not published from %s: %s (symbolic links and other non-regular files stay local; copy a file into "
                "the folder to publish it).", folder, ", ".join(skipped),
            )  # fmt: skip
        if not os.path.isfile(os.path.join(model_dir, "config.json")) or not list(
            Path(model_dir).glob("*.safetensors")
        ):
            raise FileNotFoundError(
                f"{folder!r} holds no model saved as safetensors (config.json + *.safetensors, as regular files: "
                "symbolic links are not published); push the output folder of `kd-hf distill`."
            )
        if space_id is not None:
            _space_files(space_dir, repo_id, card)
        for index, (source, hub_id) in enumerate(uploads):
            _teacher_files(source, os.path.join(staging, f"teacher-{index}"), hub_id, card)
        try:
            with _answer_within(timeout):
                urls = _upload(api, staging, plan, repo_id, space_id, private, commit_message)
        except HUB_ERRORS as error:
            # httpx's ConnectTimeout, ReadTimeout, WriteTimeout and PoolTimeout (httpx or httpx2, by hub version).
            timed_out = "Timeout" in type(error).__name__
            reason = f"no answer within {timeout:g} s" if timed_out else str(error)
            raise ConnectionError(
                f"Pushing {folder!r} to {api.endpoint} failed ({error.__class__.__name__}: {reason}). The local folder "
                "is unchanged; check the network and your token (`hf auth login` or HF_TOKEN), then push again: a "
                "repeated push updates the repos in place."
            ) from error
    logger.info("Pushed %s to %s", folder, ", ".join(urls.values()))
    return urls


def _upload(api: HfApi, staging: str, plan: list, repo_id: str, space_id: str | None, private: bool,
            commit_message: str) -> dict[str, str]:  # fmt: skip
    """Send what `push_student` staged: each local teacher first (so that the student's links resolve), the model,
    then the Space. Deleting what matches "*" and is not uploaded again makes the published files each repo's whole
    content. A teacher published earlier (`teacher_repo_id`, no folder) must exist."""
    for source, hub_id in plan:
        if source["hub_id"] is None and hub_id and not source.get("folder") and not api.repo_exists(hub_id):
            raise ValueError(  # not an OSError: the push reports it as it is, not as a network failure
                f"The teacher's repo {hub_id!r} (`--teacher-repo-id`) does not exist on {api.endpoint}; publish the "
                "teacher there first. Nothing was sent."
            )
    uploads = [hub_id for source, hub_id in plan if hub_id and source.get("folder")]
    urls = {}
    for index, hub_id in enumerate(uploads):
        urls["teacher" if len(uploads) == 1 else f"teacher-{index + 1}"] = str(
            api.create_repo(hub_id, private=private, exist_ok=True)
        )
        api.upload_folder(
            repo_id=hub_id, folder_path=os.path.join(staging, f"teacher-{index}"),
            commit_message=f"Upload the teacher of {repo_id} with kd_hf", delete_patterns="*",
        )  # fmt: skip
    model_url = api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(
        repo_id=repo_id, folder_path=os.path.join(staging, "model"), commit_message=commit_message,
        delete_patterns="*",
    )  # fmt: skip
    urls = {"model": str(model_url), **urls}
    if space_id is not None:
        urls["space"] = str(
            api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        )
        api.upload_folder(
            repo_id=space_id, repo_type="space", folder_path=os.path.join(staging, "space"),
            commit_message=commit_message, delete_patterns="*",
        )  # fmt: skip
    return urls


class PublishingTrainer(Trainer):
    """A `Trainer` whose every push (`push_to_hub: true`, at each save and at the end) goes through `push_student`,
    so that nothing but the published files ever reaches the Hub, whichever path pushes; the repo ids are checked
    before the repo is created. Checkpoints stay local whatever `hub_strategy` says; `end` pushes at the end only."""

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Check the repo ids (`hub_model_id`, else the output folder's name, and `hub_space_id`) on every process
        before Trainer creates the model repo: a bad id fails here, before training and before anything is sent, not
        after the model was pushed without its Space."""
        name = self.args.hub_model_id or os.path.basename(os.path.abspath(self.args.output_dir))
        check_repo_id(name, "hub_model_id")
        if getattr(self.args, "hub_space_id", None) is not None:
            check_repo_id(self.args.hub_space_id, "hub_space_id")
        if getattr(self.args, "hub_teacher_id", None) is not None:
            check_repo_id(self.args.hub_teacher_id, "hub_teacher_id")
        if (
            getattr(self.args, "hub_space_id", None) is not None
            and not getattr(self.args, "hub_push_teacher", True)
            and any(model_source(name)["hub_id"] is None for name in self.args.teachers or
                    [self.args.teacher_model_name_or_path] if name)
        ):  # fmt: skip
            raise ValueError(
                "`hub_space_id` publishes a Space that shows the teacher beside the student, but the teacher is a local "
                "folder and `hub_push_teacher: false` keeps it local: set `hub_push_teacher: true` (it goes to "
                "`hub_teacher_id`, default `<hub_model_id>-teacher`), or leave out `hub_space_id`."
            )
        super().init_hf_repo(token=token, private=private)

    def push_to_hub(self, commit_message: str | None = "End of training", blocking: bool = True, token=None,
                    revision=None, private=None, **kwargs):  # fmt: skip
        """Save the model with its card and push it, and its Space (`args.hub_space_id`, if set), with
        `push_student`; checkpoints, `training_args.bin` and the rest of `NOT_PUBLISHED` stay local."""
        if getattr(self, "hub_model_id", None) is None:
            self.init_hf_repo(token=token, private=private)
        self.save_model(_internal_call=True)
        if not self.is_world_process_zero():
            return None
        self.create_model_card()
        self._finish_current_push()
        return push_student(
            self.args.output_dir,
            self.hub_model_id,
            space_id=getattr(self.args, "hub_space_id", None),
            private=self.args.hub_private_repo if private is None else private,
            token=token if token is not None else self.args.hub_token,
            commit_message=commit_message or "End of training",
            teacher_repo_id=getattr(self.args, "hub_teacher_id", None),
            push_teacher=getattr(self.args, "hub_push_teacher", True),
        )

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Trainer's push at each save uploads the output folder, `training_args.bin` included, and with
        `checkpoint`/`all_checkpoints` the checkpoints themselves: push the saved model with `push_student` instead,
        model repo only (the Space follows at the end).

        It runs in the foreground (a save waits for it, `timeout` bounded); a failure is logged and training goes on,
        since the push at the end tries again.
        """
        if not self.is_world_process_zero() or self.args.hub_strategy == HubStrategy.END:
            return
        when = (
            f"step {self.state.global_step}"
            if self.args.save_strategy == SaveStrategy.STEPS
            else f"epoch {int(self.state.epoch or 0)}"
        )
        try:
            push_student(
                checkpoint_folder,
                self.hub_model_id,
                private=self.args.hub_private_repo,
                token=self.args.hub_token,
                commit_message=f"Training in progress, {when}",
            )
        except (ConnectionError, FileNotFoundError) as error:  # a down Hub; an adapter-only checkpoint
            logger.warning("Not pushed at %s: %s Training goes on; the push at the end tries again.", when, error)
