"""The models the demo shows, loaded once when it starts: the student, and the teacher given or named in its card.

A teacher that does not load leaves the student alone, with a one-line note that says why. Visitors see a model by
its Hub id, or a local folder by its name alone (`_shown_name`), and a plain reason for one that did not load
(`_why_unavailable`): never a path on the server, nor an exception (those go to the server's log). The card's example
images are read only from the student's own folder or repo.
"""

import logging
import os
from dataclasses import dataclass


logger = logging.getLogger(__name__)

MAX_EXAMPLES = 8  # of the card's examples, offered under the input


@dataclass
class _Model:
    """A loaded model as the demo uses it: its shown name, the model, its tokenizer or image processor, and whether
    it classifies images."""

    name: str
    model: object
    processor: object
    image: bool


def _shown_name(name: str) -> str:
    """How a model is named to visitors: a Hub id as it is, a local folder by its own name (never a server path)."""
    name = str(name)
    local = os.path.isabs(name) or name.startswith(("~", ".")) or "\\" in name or name.count("/") > 1
    if local or os.path.exists(name):  # a Hub id is `name` or `owner/name`
        return os.path.basename(os.path.normpath(name.replace("\\", "/"))) or name
    return name


def _why_unavailable(error: BaseException) -> str:
    """A plain reason for a model that did not load, for visitors: no trace, no path, no token advice (the full error
    goes to the server's log)."""
    import httpx
    from huggingface_hub import errors

    causes = []
    while error is not None and error not in causes:
        causes.append(error)
        error = error.__cause__ or error.__context__
    if any(isinstance(cause, (errors.GatedRepoError, errors.RepositoryNotFoundError)) for cause in causes):
        return "the Hub has no public model of that name"
    unreachable = (errors.LocalEntryNotFoundError, httpx.TransportError, ConnectionError, TimeoutError)
    if any(isinstance(cause, unreachable) or "couldn't connect" in str(cause) for cause in causes):
        return "the Hub cannot be reached from here"
    if isinstance(causes[0], FileNotFoundError):  # kd_hf's own check of a local folder
        return "no model folder of that name is on this machine"
    return f"it could not be read ({causes[0].__class__.__name__})"


def _load(student: str, teacher: str | None) -> tuple[_Model, _Model | None, dict, list[str]]:
    """The student, its teacher (None if none is named or it does not load), the student's card and the notes that
    say why a teacher is missing. A student that does not load raises."""
    from ..hub import load_student
    from ..models import load_model, load_processor

    loaded = load_student(student)
    image = loaded.is_image_model
    notes = []
    teacher = teacher or loaded.card.get("teacher")
    teacher_model = None
    if teacher is None:
        notes.append("No teacher is named in the student's card, so only the student is shown.")
    else:
        try:
            teacher_model = _Model(
                _shown_name(teacher), load_model(teacher, image).eval(), load_processor(teacher, image), image
            )
        except Exception as error:  # a Space must keep running on the student alone, and say why in one line
            logger.warning("Teacher %r could not be loaded", teacher, exc_info=True)
            notes.append(
                f"Teacher `{_shown_name(teacher)}` is not available here ({_why_unavailable(error)}), so only the "
                "student is shown."
            )
    return _Model(_shown_name(student), loaded.model, loaded.processor, image), teacher_model, loaded.card, notes


def _examples(student: str, card: dict, image: bool) -> list:
    """The card's examples: texts, or images from the student's folder or repo (never from elsewhere)."""
    if not image:
        return [entry["text"] for entry in card.get("examples", []) if entry.get("text")][:MAX_EXAMPLES]
    import PIL.Image

    images = []
    for entry in card.get("examples", [])[:MAX_EXAMPLES]:
        relative = entry.get("image")
        if not relative:
            continue
        try:
            if os.path.isdir(student):
                folder = os.path.realpath(student)
                path = os.path.realpath(os.path.join(folder, relative))
                if os.path.commonpath([folder, path]) != folder:
                    raise ValueError("outside the student's folder")
            else:
                from huggingface_hub import hf_hub_download

                path = hf_hub_download(student, relative)
            with PIL.Image.open(path) as file:
                images.append(file.convert("RGB"))
        except Exception as error:
            logger.warning("Skipping the card's example image %r: %s", relative, error)
    return images
