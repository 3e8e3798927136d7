"""What visitors may send the demo, and how it is checked before any model runs.

The limits keep a free CPU Space responsive; the methods on offer are those that explain any model of either
modality. Every problem with an input is a `_BadInput`, which the endpoints answer with a message, not a traceback.
Images are read only from gradio's upload folder (`_uploaded_file`): a client that names any other path, existing or
not, gets the same refusal, so that it learns nothing of the server's files.
"""

import os

from ..explain import EXPLAINERS
from .loading import _Model


MAX_TOKENS = 128  # per model: a CPU Space explains this in well under a second
MAX_TEXT_CHARS = 2_000  # checked before tokenising, so that huge pastes cost nothing
MAX_IMAGE_SIDE = 1024  # larger uploads are shrunk to this before anything else
MAX_IMAGE_PIXELS = 25_000_000  # refused from the header alone, before decoding (decompression bombs)
MAX_UPLOAD_SIZE = "10mb"  # gradio refuses larger uploads itself
MAX_STEPS = 64  # integrated gradients' steps; a client that asks for more gets a message
MAX_QUEUE = 16  # waiting requests; more are turned away with gradio's "queue full" message

# label -> name of the explainers that work on any model of both modalities (integrated gradients first: the default)
METHODS = {e.label: name for name, e in EXPLAINERS.items() if e.requires is None and e.text and e.image}
DEFAULT_METHOD = "integrated_gradients"  # the card's: input × gradient disagreed wildly with it on short sentences


class _BadInput(Exception):
    """A problem with what the user gave: shown to them as a message, not a traceback."""


def _settings(method: str, steps) -> tuple[str, int]:
    """A request's method and integrated gradients' steps, checked (the steps as an `int`)."""
    if method not in METHODS.values():
        raise _BadInput(f"Unknown method {method!r}; choose one of {', '.join(METHODS.values())}.")
    if not isinstance(steps, (int, float)) or not 1 <= steps <= MAX_STEPS:
        raise _BadInput(f"Integrated gradients takes 1 to {MAX_STEPS} steps here, not {steps!r}.")
    return method, int(steps)


def _token_limit(entry: _Model) -> int:
    """The most tokens the demo gives `entry`: `MAX_TOKENS`, or fewer where its tokenizer or model takes fewer."""
    limits = [MAX_TOKENS, entry.processor.model_max_length, getattr(entry.model.config, "max_position_embeddings", 0)]
    return min(limit for limit in limits if limit and limit > 0)


def _checked_text(text, models: dict[str, _Model | None]) -> str:
    """`text` without surrounding spaces; `_BadInput` if it is empty, or too long in characters (checked first,
    before tokenising) or in any model's tokens (`models`: role -> model, None for one the demo does not show)."""
    text = (text if isinstance(text, str) else "").strip()
    if not text:
        raise _BadInput("Type or paste some text first.")
    if len(text) > MAX_TEXT_CHARS:
        raise _BadInput(f"The text has {len(text)} characters; this demo explains up to {MAX_TEXT_CHARS}.")
    for role, entry in models.items():
        if entry is not None:
            tokens, limit = len(entry.processor(text)["input_ids"]), _token_limit(entry)
            if tokens > limit:
                raise _BadInput(
                    f"The text is {tokens} tokens long for the {role}; this demo explains up to {limit} "
                    "tokens (to keep a free CPU Space responsive). Shorten it."
                )
    return text


def _uploaded_file(payload) -> int:
    """An open descriptor of the file that `payload` names, if gradio received it as an upload to this app; else
    `_BadInput`, with one message for every other path (existing or not, file or FIFO), so that a client learns
    nothing of the server's files.

    The events run with `preprocess=False` (an unreadable or huge image becomes a message, not gradio's error), so
    gradio checks only payloads that carry its file marker: the path is checked here too. It must lie in gradio's
    upload folder once symbolic links are resolved, and be a regular file; it is opened without blocking, so that a
    FIFO can never hold up the demo's only worker.
    """
    import stat

    from gradio.utils import get_upload_folder
    from gradio_client.utils import is_file_obj_with_meta

    if not payload or not isinstance(payload, dict) or not payload.get("path"):
        raise _BadInput("Upload an image first.")
    refused = _BadInput("This demo reads only images uploaded to it (with gradio_client: `handle_file(path)`).")
    path, uploads = payload["path"], os.path.realpath(get_upload_folder())
    if not is_file_obj_with_meta(payload) or not isinstance(path, str):
        raise refused
    path = os.path.realpath(path)
    if os.path.commonpath([uploads, path]) != uploads:
        raise refused
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        raise refused from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise refused
    return descriptor


def _open_image(payload: dict | None):
    """The uploaded image (see `_uploaded_file`), refused from its header alone when it has too many pixels."""
    import PIL.Image
    import PIL.ImageOps

    with open(_uploaded_file(payload), "rb") as file:
        try:
            with PIL.Image.open(file) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:  # from the header, before decoding
                    raise _BadInput(
                        f"The image is {image.width}×{image.height} pixels; this demo takes up to "
                        f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels. Resize it and upload it again."
                    )
                return PIL.ImageOps.exif_transpose(image)  # a decoded copy, as the camera held it
        except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:
            raise _BadInput(f"The upload could not be read as an image ({error.__class__.__name__}).") from error
