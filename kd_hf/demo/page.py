"""The demo's page: the input and the method, then both models' answers side by side (text or image, as the student
is), with the `/explain_text` or `/explain_image` endpoint and `/status`.

`build_demo` loads the models (`loading`) and lays out their page (`_page`), which answers through
`endpoints._Explainer`; a student that does not load gets a page (and a `/status`) that says why instead. `launch_demo`
also launches it, with the upload limit.
"""

import logging

from ..explain import EXPLAINERS
from .endpoints import TOP_K, Answer, _Explainer
from .explaining import DISPLAY_SIDE
from .inputs import DEFAULT_METHOD, MAX_QUEUE, MAX_STEPS, MAX_TEXT_CHARS, MAX_TOKENS, MAX_UPLOAD_SIZE, METHODS
from .loading import _examples, _load, _Model, _shown_name, _why_unavailable


logger = logging.getLogger(__name__)


def _legend() -> str:
    """How to read the answers: the explained class, the colour scale, the agreement and deletion figures."""
    from ..explain.explanation import NEGATIVE_RGB, POSITIVE_RGB

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


def show_steps(method: str):
    """The steps slider, shown only for methods that take steps (integrated gradients)."""
    import gradio as gr

    return gr.Slider(visible=method in EXPLAINERS and EXPLAINERS[method].takes_n_steps)


def _header(student: _Model, teacher: _Model | None, notes: list[str]) -> str:
    """The page's heading: both models by their shown names and sizes, the notes from loading, and the legend."""

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
