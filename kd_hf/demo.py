"""The Gradio demo of a distilled student: its and its teacher's predictions and explanations, side by side.

```python
from kd_hf.demo import launch_demo

launch_demo("outputs/minilm-rotten-tomatoes-student")  # the teacher named in its card, if it loads
```

`kd-hf demo STUDENT [--teacher T]` runs the same locally and `space/app.py` on a Hub Space. Both models explain the
teacher's predicted class (the student's own without a teacher). Text is compared word by word (whitespace words, so
two tokenizers line up), images cell by cell on the student's patch grid. The app reads only the models it was
launched with and the example files their card names: users give text, or images as uploads, never paths.

The default method is integrated gradients, the one the card judges students by. Heatmaps and word highlights use
the card's diverging scale (`kd_hf.explain.explanation.DIVERGING_CMAP`). Visitors see models by their Hub id, or a
local folder by its name alone: never a path on the server, nor an exception (those go to the server's log).

API (e.g. `gradio_client.Client(url).predict(text, "integrated_gradients", 16, api_name="/explain_text")`):
`/explain_text (text, method, steps)` and `/explain_image (image, method, steps)` return the fields of `Answer`
in order (`Answer(*client.predict(...))` reads them by name: message, teacher and student labels and attributions,
figures, deletion curves), the figures a table (`{"headers": ["metric", "teacher", "student"], "data": [...]}`, no teacher column without a
teacher); `/status` returns what was loaded (or why nothing could be).
"""

import bisect
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from .explain import EXPLAINERS


logger = logging.getLogger(__name__)

MAX_TOKENS = 128  # per model: a CPU Space explains this in well under a second
MAX_TEXT_CHARS = 2_000  # checked before tokenising, so that huge pastes cost nothing
MAX_IMAGE_SIDE = 1024  # larger uploads are shrunk to this before anything else
MAX_IMAGE_PIXELS = 25_000_000  # refused from the header alone, before decoding (decompression bombs)
MAX_UPLOAD_SIZE = "10mb"  # gradio refuses larger uploads itself
MAX_STEPS = 64  # integrated gradients' steps; a client that asks for more gets a message
MAX_QUEUE = 16  # waiting requests; more are turned away with gradio's "queue full" message
MAX_EXAMPLES = 8
DISPLAY_SIDE = 320  # heatmap overlays are drawn at this size (tiny inputs are scaled up to be visible)
# label -> name of the explainers that work on any model of both modalities (integrated gradients first: the default)
METHODS = {e.label: name for name, e in EXPLAINERS.items() if e.requires is None and e.text and e.image}
DEFAULT_METHOD = "integrated_gradients"  # the card's: input × gradient disagreed wildly with it on short sentences
TOP_K = 0.2  # top-k overlap of the top 20% of words or cells
DELETION_STEPS = 10
OVERLAY_OPACITY = 0.75  # of a ±1 score over an image: what the model saw stays visible under the strongest cells


def _legend() -> str:
    from .explain.explanation import NEGATIVE_RGB, POSITIVE_RGB

    negative, positive = (f"rgb{tuple(rgb)}".replace(" ", "") for rgb in (NEGATIVE_RGB, POSITIVE_RGB))
    scale = f"background:linear-gradient(to right,{negative},white,{positive});padding:0 3em"
    return (
        "Both models explain the **teacher's predicted class** (the student's own without a teacher). Scores are "
        f"scaled to [−1, 1] per model, on the card's colour scale: <span style='color:{positive}'>■ red</span> pushes "
        f"towards that class, <span style='color:{negative}'>■ purple</span> away from it "
        f"(−1 <span style='{scale}'></span> +1). Agreement: Spearman ρ of the two score vectors and the overlap of "
        f"their top {TOP_K:.0%}. Deletion: the class probability as the highest-scored words or cells are removed "
        "first (a faithful explanation falls fast)."
    )


@dataclass
class _Model:
    name: str
    model: object
    processor: object
    image: bool


class Answer(NamedTuple):
    """What an explanation request returns: one value per output of the page (and of the `/explain_*` endpoints), in
    this order. Roles the demo does not show (no teacher) and every output but the message after a bad input are
    None."""

    message: str
    teacher_label: dict | None  # {class: probability}
    student_label: dict | None
    teacher: Any  # word highlights [(word, score)] or a heatmap overlay (an RGB array)
    student: Any
    figures: Any  # the agreement / latency / deletion-AUC table (a DataFrame)
    deletion: Any  # the deletion curves of both models (a DataFrame)


class _BadInput(Exception):
    """A problem with what the user gave: shown to them as a message, not a traceback."""


def _settings(method: str, steps) -> tuple[str, int]:
    if method not in METHODS.values():
        raise _BadInput(f"Unknown method {method!r}; choose one of {', '.join(METHODS.values())}.")
    if not isinstance(steps, (int, float)) or not 1 <= steps <= MAX_STEPS:
        raise _BadInput(f"Integrated gradients takes 1 to {MAX_STEPS} steps here, not {steps!r}.")
    return method, int(steps)


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
    from .hub import load_student
    from .models import load_model, load_processor

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


def _forward(model, inputs: dict) -> tuple[np.ndarray, float]:
    """Class probabilities and the fastest of five forward passes after a warm-up one, in milliseconds (a shared CPU
    is noisy: the fastest pass is the model's own cost)."""
    times = []
    with torch.no_grad():
        model(**inputs)
        for _ in range(5):
            start = time.perf_counter()
            logits = model(**inputs).logits
            times.append(time.perf_counter() - start)
    return logits.float().softmax(-1)[0].numpy(), 1000 * min(times)


def _target(explainer: _Model, teacher_label: str | None, probabilities: np.ndarray) -> int:
    """The explained class in this model's label ids: the teacher's class by name, else the model's own top-1."""
    label2id = {str(label): i for i, label in explainer.model.config.id2label.items()}
    return label2id.get(teacher_label, int(probabilities.argmax()))


def _label(model, probabilities: np.ndarray) -> dict[str, float]:
    return {str(model.config.id2label[i]): float(p) for i, p in enumerate(probabilities)}


def _json_number(value: float) -> float | None:
    return None if value is None or np.isnan(value) else round(float(value), 4)


def _table(report: dict, pair: bool, unit: str):
    """The figures of one explanation as a table a visitor can read: a row per metric, a column per model (no teacher
    column without a teacher); agreement is the student's with the teacher."""
    import pandas as pd

    roles = ["teacher", "student"] if pair else ["student"]
    per_model = [
        ("latency, ms (one forward pass)", "latency_ms"),
        ("explanation time, ms", "explain_ms"),
        ("deletion AUC (lower: more faithful)", "deletion_auc"),
    ]
    rows = [[name, *(report[key][role] for role in roles)] for name, key in per_model]
    if pair:
        top = f"top-{report['top_k']} of {report['features']} {unit}"
        rows += [
            ["Spearman ρ with the teacher", None, report["spearman"]],
            [f"{top}: overlap with the teacher", None, report["top_k_overlap"]],
        ]
    return pd.DataFrame(rows, columns=["metric", *roles], dtype=object)  # object: a missing value stays None


# ---- text -------------------------------------------------------------------------------------------------------


def _token_limit(entry: _Model) -> int:
    limits = [MAX_TOKENS, entry.processor.model_max_length, getattr(entry.model.config, "max_position_embeddings", 0)]
    return min(limit for limit in limits if limit and limit > 0)


def _to_words(explanation, text: str, starts: list[int]) -> np.ndarray:
    """Sum a tokenizer's word scores into the whitespace words of `text` (whose start offsets are `starts`)."""
    scores, cursor = np.zeros(len(starts)), 0
    for word, score in zip(explanation.words, explanation.scores):
        at = text.find(word, cursor)
        if at < 0:
            continue
        cursor = at + len(word)
        scores[bisect.bisect_right(starts, at) - 1] += score
    return scores


def _explain_text(entry: _Model, text: str, starts: list[int], method: str, steps: int, teacher_label):
    from .explain import Explanation, explain_text
    from .metrics.faithfulness import faithfulness

    encoded = entry.processor(
        [text], truncation=True, max_length=_token_limit(entry), return_tensors="pt",
        return_offsets_mapping=True, return_special_tokens_mask=True,
    )  # fmt: skip
    offsets, special = encoded.pop("offset_mapping")[0], encoded.pop("special_tokens_mask")[0]
    probabilities, latency = _forward(entry.model, dict(encoded))
    target = _target(entry, teacher_label, probabilities)
    start = time.perf_counter()
    [explanation] = explain_text(
        entry.model, entry.processor, [text], method, target, n_steps=steps, internal_batch_size=16,
        max_length=_token_limit(entry), progress=False,
    )  # fmt: skip
    scores = _to_words(explanation, text, starts)
    features = torch.tensor(
        [-1 if s or b == e else bisect.bisect_right(starts, int(e) - 1) - 1 for s, (b, e) in zip(special, offsets)]
    )
    pad = entry.processor.pad_token_id or 0
    deletion = faithfulness(entry.model, dict(encoded), features, scores, target, pad, DELETION_STEPS)
    words = Explanation(method, target, explanation.label, explanation.probability, scores)
    return probabilities, latency, 1000 * (time.perf_counter() - start), words, deletion


def _highlights(words: list[str], scores: np.ndarray) -> list[tuple[str, float | None]]:
    pairs = []
    for word, score in zip(words, scores):
        pairs += [(word, round(float(score), 4)), (" ", None)]
    return pairs[:-1]


# ---- images -----------------------------------------------------------------------------------------------------


def _pixels(entry: _Model, image) -> torch.Tensor:
    mode = "L" if getattr(entry.model.config, "num_channels", 3) == 1 else "RGB"
    encoded = entry.processor(image.convert(mode), return_tensors="np", input_data_format="channels_last")
    return torch.as_tensor(encoded["pixel_values"]).float()


def _overlay(pixels: torch.Tensor, scores: np.ndarray) -> np.ndarray:
    """What the model saw (its own pixels, min-max scaled) with its scores in [-1, 1] painted over it."""
    import PIL.Image

    from .explain.explanation import score_rgba

    view = pixels.mean(0, keepdim=True) if pixels.shape[0] != 3 else pixels
    view = (view - view.min()) / (view.max() - view.min()).clamp_min(1e-8)
    view = (view.expand(3, -1, -1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    height, width = view.shape[:2]
    scale = DISPLAY_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = PIL.Image.NEAREST if scale >= 1 else PIL.Image.BILINEAR
    base = np.asarray(PIL.Image.fromarray(view).resize(size, resample), dtype=float)
    heat = np.asarray(PIL.Image.fromarray(scores.astype(np.float32)).resize(size, resample))
    paint = score_rgba(heat, OVERLAY_OPACITY)  # the card's scale, as its PNGs paint it
    alpha = paint[..., 3:]
    return (base * (1 - alpha) + 255 * paint[..., :3] * alpha).round().astype(np.uint8)


def _explain_image(entry: _Model, image, grid: int, method: str, steps: int, teacher_label):
    from .explain import explain_images
    from .explain.inputs import grid_cells
    from .metrics.faithfulness import faithfulness

    pixels = _pixels(entry, image)
    probabilities, latency = _forward(entry.model, {"pixel_values": pixels})
    target = _target(entry, teacher_label, probabilities)
    start = time.perf_counter()
    [explanation] = explain_images(  # pixels that already require gradients keep captum from warning
        entry.model, pixels.clone().requires_grad_(True), method, target, steps, internal_batch_size=16,
        grid_size=grid, progress=False,
    )  # fmt: skip
    cells = grid_cells(*pixels.shape[-2:], grid)
    deletion = faithfulness(
        entry.model, {"pixel_values": pixels}, cells, explanation.grid.ravel(), target, 0, DELETION_STEPS
    )
    overlay = _overlay(pixels[0], explanation.normalized())
    return probabilities, latency, 1000 * (time.perf_counter() - start), explanation, deletion, overlay


# ---- the app ----------------------------------------------------------------------------------------------------


class _Explainer:
    """The demo's two endpoints over a loaded student and (optional) teacher."""

    def __init__(self, student: _Model, teacher: _Model | None):
        self.student, self.teacher = student, teacher

    def _report(self, method: str, runs: dict, features: int, unit: str, notes: list[str]):
        """What text and images share: the message, the figures table and the deletion curves."""
        import pandas as pd

        from .metrics.explanation import agreement

        pair = runs.get("teacher") is not None
        figures = agreement(runs["teacher"]["scores"], runs["student"]["scores"], TOP_K) if pair else {}
        report = {
            "explained_class": (runs["teacher"] or runs["student"])["label"],
            "features": features,
            "top_k": max(1, int(round(TOP_K * features))),
            "spearman": _json_number(figures.get("spearman")) if pair else None,
            "top_k_overlap": _json_number(figures.get("top_k_overlap")) if pair else None,
            "latency_ms": {role: run and round(run["latency"], 2) for role, run in runs.items()},
            "explain_ms": {role: run and round(run["explain"], 1) for role, run in runs.items()},
            "deletion_auc": {role: run and round(run["deletion"]["deletion_auc"], 4) for role, run in runs.items()},
        }
        # the fractions of features that `faithfulness` removed at each point of its curve
        fractions = np.round(np.arange(DELETION_STEPS + 1) * features / DELETION_STEPS) / features
        curves = pd.DataFrame(
            [
                {"fraction removed": float(x), "probability": p, "model": role}
                for role, run in runs.items()
                if run is not None
                for x, p in zip(fractions, run["deletion"]["deletion_curve"])
            ]
        )
        name = EXPLAINERS[method].label
        summary = f"Explained class: **{report['explained_class']}** ({name})."
        if pair:
            rho = report["spearman"]
            rho = "undefined (constant scores)" if rho is None else f"{rho:.2f}"
            summary += f" Agreement: Spearman ρ {rho}, top-{report['top_k']} overlap {report['top_k_overlap']:.2f}."
            teacher_ms, student_ms = report["latency_ms"]["teacher"], report["latency_ms"]["student"]
            speed = teacher_ms / student_ms if teacher_ms >= student_ms else student_ms / teacher_ms
            faster = "faster" if teacher_ms >= student_ms else "slower"
            summary += f" Latency: teacher {teacher_ms:.1f} ms, student {student_ms:.1f} ms ({speed:.1f}× {faster})."
        else:
            summary += f" Latency: student {report['latency_ms']['student']:.1f} ms."
        return " ".join([*notes, summary]), _table(report, pair, unit), curves

    @staticmethod
    def _failure(message: str) -> Answer:
        """The answer to a bad input: the message, and every other output cleared."""
        import gradio as gr

        gr.Warning(message)
        return Answer(f"⚠️ {message}", *[None] * (len(Answer._fields) - 1))

    def explain_text(self, text: str, method: str, steps: int) -> Answer:
        """Explain `text` with both models: their predictions, word attributions, figures and deletion curves."""
        try:
            method, steps = _settings(method, steps)
            text = (text if isinstance(text, str) else "").strip()
            if not text:
                raise _BadInput("Type or paste some text first.")
            if len(text) > MAX_TEXT_CHARS:
                raise _BadInput(f"The text has {len(text)} characters; this demo explains up to {MAX_TEXT_CHARS}.")
            entries = {"teacher": self.teacher, "student": self.student}
            for role, entry in entries.items():
                if entry is not None:
                    tokens, limit = len(entry.processor(text)["input_ids"]), _token_limit(entry)
                    if tokens > limit:
                        raise _BadInput(
                            f"The text is {tokens} tokens long for the {role}; this demo explains up to {limit} "
                            "tokens (to keep a free CPU Space responsive). Shorten it."
                        )
        except _BadInput as error:
            return self._failure(str(error))
        spans = list(re.finditer(r"\S+", text))
        starts, words = [span.start() for span in spans], [span.group() for span in spans]
        runs, label = {"teacher": None, "student": None}, None
        for role, entry in entries.items():
            if entry is None:
                continue
            probabilities, latency, explain, explanation, deletion = _explain_text(
                entry, text, starts, method, steps, label
            )
            label = label or explanation.label
            runs[role] = {
                "prediction": _label(entry.model, probabilities), "label": explanation.label,
                "scores": explanation.scores, "normalized": explanation.normalized(), "latency": latency,
                "explain": explain, "deletion": deletion,
            }  # fmt: skip
        message, table, curves = self._report(method, runs, len(words), "words", [])
        labels = [run and run["prediction"] for run in runs.values()]
        highlights = [run and _highlights(words, run["normalized"]) for run in runs.values()]
        return Answer(message, *labels, *highlights, table, curves)

    def explain_image(self, upload: dict | None, method: str, steps: int) -> Answer:
        """Explain an uploaded image with both models: their predictions, heatmap overlays, figures and deletion
        curves."""
        from .explain.vision import patch_grid_size

        notes = []
        try:
            method, steps = _settings(method, steps)
            image = _open_image(upload)
            if max(image.size) > MAX_IMAGE_SIDE:
                notes.append(
                    f"The image ({image.size[0]}×{image.size[1]}) was shrunk to {MAX_IMAGE_SIDE} pixels on its longer "
                    "side first."
                )
                image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
        except _BadInput as error:
            return self._failure(str(error))
        grid = patch_grid_size(self.student.model)
        runs, overlays, label = {"teacher": None, "student": None}, {"teacher": None, "student": None}, None
        for role, entry in (("teacher", self.teacher), ("student", self.student)):
            if entry is None:
                continue
            probabilities, latency, explain, explanation, deletion, overlays[role] = _explain_image(
                entry, image, grid, method, steps, label
            )
            label = label or explanation.label
            runs[role] = {
                "prediction": _label(entry.model, probabilities), "label": explanation.label,
                "scores": explanation.grid, "latency": latency, "explain": explain, "deletion": deletion,
            }  # fmt: skip
        message, table, curves = self._report(method, runs, grid * grid, f"cells ({grid}×{grid})", notes)
        labels = [run and run["prediction"] for run in runs.values()]
        return Answer(message, *labels, overlays["teacher"], overlays["student"], table, curves)


def show_steps(method: str):
    """The steps slider, shown only for methods that take steps (integrated gradients)."""
    import gradio as gr

    return gr.Slider(visible=method in EXPLAINERS and EXPLAINERS[method].takes_n_steps)


def _header(student: _Model, teacher: _Model | None, notes: list[str]) -> str:
    def size(entry: _Model) -> str:
        count = sum(p.numel() for p in entry.model.parameters())
        return f"{count / 1e6:.1f}M parameters" if count >= 1e5 else f"{count / 1e3:.0f}k parameters"

    lines = ["# Teacher vs student explanations", f"**Student:** `{student.name}` ({size(student)})"]
    if teacher is not None:
        lines[-1] += f" · **Teacher:** `{teacher.name}` ({size(teacher)})"
    return "\n\n".join([*lines, *notes, _legend()])


def build_demo(student: str, teacher: str | None = None):
    """The demo of a student (a Hub id or a local folder) and its teacher (defaults to the one its card names).

    A teacher that is not given, not named or does not load leaves a student-only demo that says why; a student that
    does not load leaves a page (and a `/status` endpoint) that says why. The queue is set up for a free CPU Space.

    Returns:
        `gr.Blocks`: launch it with `launch(max_file_size=MAX_UPLOAD_SIZE)`, or use `launch_demo`.
    """
    import gradio as gr

    try:
        student_model, teacher_model, card, notes = _load(student, teacher)
    except Exception as error:  # the page says why instead of a Space that crashes with a traceback
        logger.error("Student %r could not be loaded", student, exc_info=True)
        message = (
            f"⚠️ The student `{_shown_name(student)}` is not available here ({_why_unavailable(error)}); the "
            "server's log has the details."
        )

        def why() -> str:
            return message

        with gr.Blocks(title="kd_hf demo") as demo:
            gr.Markdown(message)
            gr.api(why, api_name="status")
        return demo.queue(default_concurrency_limit=1, max_size=MAX_QUEUE)

    return _page(_Explainer(student_model, teacher_model), _header(student_model, teacher_model, notes),
                 _examples(student, card, student_model.image))  # fmt: skip


def _page(explainer: _Explainer, header: str, examples: list):
    """The page of a loaded pair: the input, the method, then both models' answers side by side (`Answer`'s
    outputs), with the explanation endpoints and `/status`."""
    import gradio as gr

    image, has_teacher = explainer.student.image, explainer.teacher is not None
    with gr.Blocks(title="kd_hf: teacher vs student explanations") as demo:
        gr.Markdown(header)
        with gr.Row():
            if image:
                source = gr.Image(
                    label="Image", type="pil", sources=["upload", "clipboard"], value=examples[0] if examples else None,
                    height=DISPLAY_SIDE,
                )  # fmt: skip
            else:
                source = gr.Textbox(
                    label=f"Text (up to {MAX_TOKENS} tokens)", lines=3, max_length=MAX_TEXT_CHARS,
                    value=examples[0] if examples else "",
                )  # fmt: skip
            with gr.Column():
                method = gr.Radio(list(METHODS.items()), value=DEFAULT_METHOD, label="Attribution method")
                steps = gr.Slider(
                    4, MAX_STEPS, value=16, step=4, label="Integrated gradients: steps",
                    visible=EXPLAINERS[DEFAULT_METHOD].takes_n_steps,
                )  # fmt: skip
                button = gr.Button("Explain", variant="primary")
        outputs = {"message": gr.Markdown()}
        with gr.Row():
            for role in ("teacher", "student"):
                with gr.Column(visible=role == "student" or has_teacher):
                    outputs[f"{role}_label"] = gr.Label(label=f"{role.title()} prediction", num_top_classes=5)
                    if image:
                        outputs[role] = gr.Image(
                            label=f"{role.title()} attribution", format="png", height=DISPLAY_SIDE
                        )
                    else:
                        outputs[role] = gr.HighlightedText(
                            label=f"{role.title()} word attributions (red: towards the class, purple: away)",
                            show_legend=True, combine_adjacent=False,
                        )  # fmt: skip
        with gr.Row():
            outputs["figures"] = gr.Dataframe(
                headers=["metric", "teacher", "student"] if has_teacher else ["metric", "student"],
                label="Agreement, latency, deletion AUC", interactive=False, wrap=True,
            )  # fmt: skip
            outputs["deletion"] = gr.LinePlot(
                x="fraction removed", y="probability", color="model", y_lim=[0, 1], label="Deletion curves",
                title="Class probability as top-ranked features are removed",
            )  # fmt: skip
        if examples:
            gr.Examples(
                [[example] for example in examples], inputs=[source], label="From the card", cache_examples=False
            )
        ordered = [outputs[name] for name in Answer._fields]
        function = explainer.explain_image if image else explainer.explain_text
        name = "explain_image" if image else "explain_text"
        # no preprocessing: the functions check the values themselves and answer bad ones with a message
        button.click(function, [source, method, steps], ordered, api_name=name, preprocess=False)
        # a UI toggle, not an endpoint: answered at once, even while an explanation runs
        method.change(show_steps, method, steps, queue=False, api_visibility="private")
        if examples:  # a freshly opened page shows a prediction straight away
            demo.load(function, [source, method, steps], ordered, api_visibility="private", preprocess=False)

        def loaded() -> str:
            return header

        gr.api(loaded, api_name="status")
    return demo.queue(default_concurrency_limit=1, max_size=MAX_QUEUE)


def launch_demo(student: str, teacher: str | None = None, **launch_kwargs):
    """Build the demo and launch it with the upload limit; `launch_kwargs` go to `gr.Blocks.launch`.

    Returns:
        `gr.Blocks`: the running demo (`prevent_thread_lock=True` returns at once; `.close()` stops it).
    """
    demo = build_demo(student, teacher)
    demo.launch(max_file_size=MAX_UPLOAD_SIZE, **launch_kwargs)
    return demo
