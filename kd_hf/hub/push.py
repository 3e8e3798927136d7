"""Publish a student: its model repo, its local teachers' repos and its Gradio Space, in that order.

`push_student` checks every repo id and teacher before it sends anything, stages the files (`staging`), and uploads
them with each request bounded by `timeout` seconds (`_answer_within`), since huggingface_hub's client waits forever.
"""

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import get_session

from ..card import CARD_FILE, teacher_sources
from .loading import check_repo_id, read_card
from .staging import SPACE_SOURCE, _has_weights, _published_card, _space_files, _stage, _teacher_files


logger = logging.getLogger(__name__)

# huggingface_hub's HTTP errors are OSErrors; its transport's (a refused connection, a timeout) share their base.
HUB_ERRORS = (OSError, *HfHubHTTPError.__bases__)
# Seconds a push waits for the Hub to connect, take each part of an upload, or answer; huggingface_hub's own client
# waits forever, so a Hub that accepts connections and never answers would hang the push (and a training run's end).
PUSH_TIMEOUT = 60.0


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
