"""The explanation part of an evaluation: both models explain the same examples, which are compared, scored and
written as the explanation report (`kd_hf.explain.report`)."""

import logging
import os

from ..data import preprocess_images
from ..explain import IMAGE_BASELINE, TEXT_BASELINE, get_explainer
from ..pairing import use_eager_attention


logger = logging.getLogger(__name__)


def explain_sample(config, evaluation, student, teacher, student_processor, teacher_processor, n, method, n_steps):
    """Both models' explanations of the first `n` examples of a raw eval split, compared.

    Returns:
        `tuple`: what `compare_explanations` returned (`None` for sentence pairs, not supported yet), what to show
        for each example (texts, or `[h, w]` arrays to overlay), and the raw images (`None` for text).
    """
    from ..explain.compare import compare_explanations

    if method == "attention_rollout":
        for role, model in (("student", student), ("teacher", teacher)):
            use_eager_attention(model, role, "attention rollout reads attention weights")

    sample = evaluation.select(range(min(n, evaluation.num_rows)))
    if config.is_image_task:
        pixels = preprocess_images(
            sample, student_processor, image_column=config.image_column, label_column=config.label_column,
            num_channels=getattr(student.config, "num_channels", 3),
        )[:]["pixel_values"]  # fmt: skip
        comparison = compare_explanations(teacher, student, pixels, method=method, n_steps=n_steps)
        return comparison, [p.mean(0).numpy() for p in pixels], sample[config.image_column]
    if len(config.text_columns) > 1:
        logger.warning("Explanations of sentence pairs are not supported yet: skipping them.")
        return None, None, None
    texts = sample[config.text_columns[0]]
    comparison = compare_explanations(
        teacher, student, texts, student_processor, teacher_processor, method=method, n_steps=n_steps,
        max_length=config.max_length,
    )  # fmt: skip
    return comparison, texts, None


def explanation_settings(image: bool, method: str, n_steps: int) -> dict:
    """How the explanations of a report were made, in words, for the report and the card."""
    explainer = get_explainer(method, "image" if image else "text")
    return {
        "method": method,
        "n_steps": n_steps if explainer.takes_n_steps else None,
        "baseline": IMAGE_BASELINE if image else TEXT_BASELINE,
        **explainer.settings,
        "target": "the teacher's predicted class, for both models",
        "aggregation": (
            "pixel scores mean-pooled into the student's patch grid; maps compared cell by cell"
            if image
            else "sub-word scores summed into words; explanations compared word by word"
        ),
        "agreement": "signed scores ranked; top-k = top 20% of features; random baseline = chance level (expected "
        "figure with the student's scores shuffled: 0 for rank correlations, k/n for top-k overlap)",
        "faithfulness": "ERASER AOPC over bins 1/5/10/20/50% (removal = [PAD] and masked out / zero pixels); "
        "deletion and insertion AUC over 10 steps",
    }


def compare_on_examples(pair: tuple, output_dir: str, n: int, method: str, n_steps: int, trained_method: str | None):
    """Both models' explanations of `n` examples compared (and written), and also by the method the student was
    trained to match when it is another one; None where the pair cannot be compared."""
    comparison, shown, inputs = explain_sample(*pair, n, method, n_steps)
    if comparison is None:
        return None
    explanations = _write_explanations(comparison, output_dir, shown, inputs)
    if trained_method not in (None, method):
        trained, _, _ = explain_sample(*pair, n, trained_method, n_steps)
        explanations["trained_method"] = {"method": trained_method, "agreement": trained["agreement"]}
    return explanations


def _write_explanations(comparison: dict, output_dir: str, shown, images=None) -> dict:
    """The explanation report, the explained images (`examples/000.png`, ...), and what the results say of both."""
    from ..explain.report import write_report

    image = images is not None
    if image:
        write_report(comparison, output_dir, list(range(len(shown))), shown)
        os.makedirs(os.path.join(output_dir, "examples"), exist_ok=True)
        for i, picture in enumerate(images):
            picture.save(os.path.join(output_dir, "examples", f"{i:03d}.png"))
    else:
        write_report(comparison, output_dir, shown)
    return {
        "settings": explanation_settings(image, comparison["method"], comparison["n_steps"]),
        "num_examples": len(comparison["explanations"]["teacher"]),
        "skipped": comparison["skipped"],
        "agreement": comparison["agreement"],
        "faithfulness": comparison["faithfulness"],
        "completeness_error": comparison["completeness_error"],
        "examples": [
            {
                "index": i,
                "text": None if image else " ".join(t.words),
                "teacher": {"label": t.label, "probability": t.probability},
                "student": {"label": s.label, "probability": s.probability},
                "input_png": f"examples/{i:03d}.png" if image else None,
                "teacher_png": f"explanations/{i:03d}_teacher.png",
                "student_png": f"explanations/{i:03d}_student.png",
            }
            for i, (t, s) in enumerate(
                zip(comparison["explanations"]["teacher"], comparison["explanations"]["student"])
            )
        ],
    }
