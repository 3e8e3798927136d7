"""The global report: what teacher and student rely on overall, how alike their representations are, and how
steady their explanations are, on a bounded sample (`kd-hf eval --global_examples N`).

```python
from kd_hf.interpret import global_report

report = global_report(teacher, student, texts, labels, ["negative", "positive"], "eval", tokenizer=tokenizer)
report["surrogate"]["student"]["fidelity"], report["representation"]["penultimate_cka"]
```

Writes `global/global_report.json`, `global/importance.png`, `global/representation.png` and `global/cka.png`
under `output_dir`; the returned dict (what `eval_results.json` holds under `global`) names them relative to it.
"""

import dataclasses
import json
import logging
import os

import numpy as np
import torch
from tqdm.auto import tqdm

from ..explain import explain_images, explain_text
from ..explain.report import strict_json, write_atomically
from ..explain.vision import patch_grid_size
from . import importance, representation, robustness, surrogate


logger = logging.getLogger(__name__)

FOLDER = "global"
ROLES = ("teacher", "student")


def _explain(model, examples, tokenizer, method, n_steps, grid_size, max_length):
    if tokenizer is not None:
        return explain_text(model, tokenizer, examples, method, n_steps=n_steps, max_length=max_length)
    return explain_images(model, examples, method, n_steps=n_steps, grid_size=grid_size)


def _batches(examples, tokenizer, max_length, batch_size=32):
    if tokenizer is not None:
        yield from (
            dict(encoded) for _, encoded in robustness.text_batches(tokenizer, examples, batch_size, max_length)
        )
        return
    for start in range(0, len(examples), batch_size):
        yield {"pixel_values": examples[start : start + batch_size]}


@dataclasses.dataclass
class _Sample:
    """What every part of the report reads: both models with their own inputs and tokenizers, and the sample."""

    models: dict
    inputs: dict
    tokenizers: dict
    labels: np.ndarray
    label_names: list[str]
    grid_size: int | None
    max_length: int
    folder: str
    seed: int

    @property
    def text(self) -> bool:
        return self.tokenizers["student"] is not None


def global_report(
    teacher,
    student,
    examples,
    labels,
    label_names: list[str],
    output_dir: str,
    tokenizer=None,
    teacher_tokenizer=None,
    teacher_examples=None,
    teacher_order: list[int] | None = None,
    method: str = "integrated_gradients",
    n_steps: int = 32,
    top_k: int = 10,
    max_depth: int = 3,
    robustness_examples: int = 50,
    robustness_n_steps: int = 16,
    max_length: int = 128,
    seed: int = 0,
    sample: str | None = None,
) -> dict:
    """Global feature importance, surrogate rules, feature-space views and robustness, for teacher and student.

    Args:
        teacher, student (`PreTrainedModel`): the two classifiers.
        examples (`list[str]` or `torch.Tensor`): texts (with `tokenizer`) or the student's `[n, c, h, w]` pixels.
        labels (`np.ndarray`): true class ids, in the student's label order.
        label_names (`list[str]`): the student's class names.
        output_dir (`str`): the PNGs and JSON go to `output_dir/global/`.
        tokenizer, teacher_tokenizer: the student's and (if it differs) the teacher's tokenizer; `None` for images.
        teacher_examples (`torch.Tensor`, *optional*): the teacher's own pixels, when it preprocesses differently.
        teacher_order (`list[int]`, *optional*): student class i is the teacher's class `teacher_order[i]`.
        method (`str`): an explainer of `kd_hf.explain.EXPLAINERS` that applies to the modality (an error otherwise).
        n_steps (`int`): integration steps for importance; `robustness_n_steps` for the (many more) robustness runs.
        top_k (`int`): words or patch-grid cells per class compared between the models.
        max_depth (`int`): depth of the surrogate trees.
        robustness_examples (`int`): the first examples perturbed (robustness costs many explanations per example).
        sample (`str`, *optional*): how the examples were chosen, for the report.
    """
    folder = os.path.join(output_dir, FOLDER)
    os.makedirs(folder, exist_ok=True)
    data = _Sample(
        models={"teacher": teacher, "student": student},
        inputs={"teacher": teacher_examples if teacher_examples is not None else examples, "student": examples},
        tokenizers={"teacher": teacher_tokenizer or tokenizer, "student": tokenizer},
        labels=np.asarray(labels), label_names=label_names,
        grid_size=None if tokenizer is not None else patch_grid_size(student), max_length=max_length,
        folder=folder, seed=seed,
    )  # fmt: skip
    progress = tqdm(total=8, desc="Global report")
    explained = _explanations(data, method, n_steps, teacher_order, progress)
    report = {"num_examples": len(data.labels)}
    for part, build in (("importance", lambda: _importance(data, explained, top_k)),
                        ("surrogate", lambda: _surrogates(data, explained, max_depth)),
                        ("representation", lambda: _representations(data))):  # fmt: skip
        progress.set_postfix_str(part)
        report[part] = build()
        progress.update()
    settings = {"examples": min(robustness_examples, len(data.labels)), "method": method,
                "n_steps": robustness_n_steps, "radius": 0.05, "n_perturb_samples": 5}  # fmt: skip
    if not data.text:
        settings.update(noise=0.1, fgsm_epsilon=0.05)  # in standard deviations of the pixels, as `radius`
    report["robustness"] = {"settings": settings, **_robustness(data, explained, settings, teacher_order, progress)}
    progress.close()
    report["settings"] = {
        "method": method,
        "n_steps": n_steps,
        "explained_class": "each model's own prediction",
        "sample": sample or "as given",
        "top_k": top_k,
        "task": "text-classification" if data.text else "image-classification",
    }
    report = json.loads(json.dumps(report, default=_json))
    write_atomically(os.path.join(folder, "global_report.json"), strict_json(report))  # whole, `null` for NaN
    return report


def _explanations(data: _Sample, method: str, n_steps: int, teacher_order, progress) -> dict:
    """Each model's explanation of its own prediction, the teacher's classes named as the student's."""
    to_student = {t: s for s, t in enumerate(teacher_order)} if teacher_order is not None else None
    explained = {}
    for role in ROLES:
        progress.set_postfix_str(f"explaining ({role})")
        found = _explain(
            data.models[role], data.inputs[role], data.tokenizers[role], method, n_steps, data.grid_size,
            data.max_length,
        )  # fmt: skip
        if role == "teacher" and to_student is not None:
            found = [
                dataclasses.replace(e, target=to_student[e.target], label=data.label_names[to_student[e.target]])
                for e in found
            ]
        explained[role] = found
        progress.update()
    return explained


def _importance(data: _Sample, explained: dict, top_k: int) -> dict:
    """Global feature importance per class, the overlap of the two models' top-k, and its plot."""
    path = os.path.join(data.folder, "importance.png")
    if data.text:
        ranked = {role: importance.word_importance(explained[role], data.label_names) for role in ROLES}
        found = importance.class_importance(ranked["teacher"], ranked["student"], data.label_names, top_k)
        importance.plot_word_importance(found, path, top_k)
    else:
        grids = {role: importance.grid_importance(explained[role], data.label_names) for role in ROLES}
        found = importance.class_importance(grids["teacher"], grids["student"], data.label_names, top_k, image=True)
        pictures, labels = data.inputs["student"].float().mean(1).numpy(), data.labels
        means = {name: pictures[labels == c].mean(0) for c, name in enumerate(data.label_names) if (labels == c).any()}
        importance.plot_grid_importance(found, means, path)
    return {**found, "png": f"{FOLDER}/importance.png"}


def _surrogates(data: _Sample, explained: dict, max_depth: int) -> dict:
    """A shallow decision tree imitating each model's predictions, with its fidelity on held-out examples."""
    examples, labels = data.inputs["student"], data.labels
    train, test = surrogate.split_indices(len(labels), seed=data.seed)
    if data.text:
        features, names = surrogate.bag_of_words(examples, train)
        described = "binary bag of words (words in >= 2 training texts)"
    else:
        features, names = surrogate.pooled_patches(examples, data.grid_size)
        described = f"mean intensity of each cell of the {data.grid_size}x{data.grid_size} patch grid"
    fitted = {}
    for role in ROLES:
        predictions = np.array([e.target for e in explained[role]])
        fitted[role] = surrogate.fit_surrogate(
            features, predictions, names, data.label_names, train, test, labels, max_depth=max_depth, seed=data.seed
        )
    return {
        "features": described,
        "num_features": len(names),
        "max_depth": max_depth,
        "min_samples_leaf": fitted["student"]["tree"].min_samples_leaf,
        "train_examples": len(train),
        "test_examples": len(test),
        **{role: {k: v for k, v in fitted[role].items() if k != "tree"} for role in ROLES},
    }


def _representations(data: _Sample) -> dict:
    """Linear CKA between the models' penultimate and per-layer representations, and 2-D views of each."""
    penultimate, layers = {}, {}
    for role in ROLES:
        batches = _batches(data.inputs[role], data.tokenizers[role], data.max_length)
        penultimate[role], layers[role] = representation.representations(data.models[role], batches)
    views = {role: representation.projections(penultimate[role], data.seed) for role in ROLES}
    path = os.path.join(data.folder, "representation.png")
    representation.plot_projections(views, data.labels, data.label_names, path)
    cka = representation.layer_cka(layers["teacher"], layers["student"])
    representation.plot_cka(cka["cka_matrix"], cka["layers"], os.path.join(data.folder, "cka.png"))
    return {
        "penultimate": "input of the classification head (BERT: pooled [CLS]; ViT: normed [CLS])",
        "layer_features": "mean over real tokens (text) or over all tokens (images) of each layer's states",
        "penultimate_cka": representation.linear_cka(penultimate["teacher"], penultimate["student"]),
        **cka,
        "projections": list(views["student"]),
        "png": f"{FOLDER}/representation.png",
        "cka_png": f"{FOLDER}/cka.png",
    }


def _robustness(data: _Sample, explained: dict, settings: dict, teacher_order, progress) -> dict:
    """How much each model's explanations move under small perturbations of its first `settings["examples"]`."""
    r, method, n_steps = settings["examples"], settings["method"], settings["n_steps"]
    options = dict(method=method, n_steps=n_steps, radius=settings["radius"],
                   n_perturb_samples=settings["n_perturb_samples"], seed=data.seed)  # fmt: skip
    found = {}
    for role in ROLES:
        progress.set_postfix_str(f"robustness ({role})")
        model, inputs, own = data.models[role], data.inputs[role][:r], explained[role][:r]
        targets = [e.target if teacher_order is None or role == "student" else teacher_order[e.target] for e in own]
        own = [dataclasses.replace(e, target=t) for e, t in zip(own, targets)]
        if data.text:
            tokenizer = data.tokenizers[role]
            values = robustness.text_sensitivity(model, tokenizer, inputs, targets, max_length=data.max_length,
                                                 **options)  # fmt: skip
            perturbed = {
                "drop_word": robustness.drop_word(model, tokenizer, inputs, own, method, n_steps, data.max_length)
            }
        else:
            values = robustness.image_sensitivity(model, inputs, targets, **options)
            perturbed = robustness.image_perturbations(
                model, inputs, own, method, n_steps, settings["noise"], settings["fgsm_epsilon"], data.grid_size,
                data.seed,
            )  # fmt: skip
        found[role] = {"sensitivity_max": robustness.summarize(values, data.seed), **perturbed}
        progress.update()
    return found


def _json(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray | torch.Tensor):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def global_report_of_split(
    config, evaluation, processed, labels, student, teacher, student_processor, teacher_processor, n, output_dir,
    method, n_steps, teacher_order=None,
) -> dict | None:  # fmt: skip
    """`global_report` on `n` examples drawn at random (seeded by `config.seed`) from an evaluation split, as
    `evaluate_student` holds it (raw, processed, labels): splits are often sorted by class, so the first `n` would
    not do. `None` for sentence pairs, which it does not support yet."""
    if not config.is_image_task and len(config.text_columns) > 1:
        logger.warning("The global report does not support sentence pairs yet: skipping it.")
        return None
    chosen = np.sort(np.random.default_rng(config.seed).permutation(len(labels))[:n]).tolist()
    options = dict(
        label_names=[student.config.id2label[i] for i in range(student.config.num_labels)], output_dir=output_dir,
        teacher_order=teacher_order, method=method, n_steps=n_steps, seed=config.seed,
        sample=f"drawn at random (seed {config.seed}) from the evaluation split",
    )  # fmt: skip
    if config.is_image_task:
        sample = processed.select(chosen)[:]
        teacher_pixels = sample.get("teacher_pixel_values")
        return global_report(
            teacher, student, sample["pixel_values"], labels[chosen], teacher_examples=teacher_pixels, **options
        )
    texts = evaluation.select(chosen)[config.text_columns[0]]
    return global_report(
        teacher, student, texts, labels[chosen], tokenizer=student_processor, teacher_tokenizer=teacher_processor,
        max_length=config.max_length, **options,
    )  # fmt: skip
