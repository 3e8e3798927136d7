"""The card's sentences and lists, written from its facts: the summary, the usage snippet, *Training data*, *Compute*
and the example counts of the limitations. `kd_hf.report` writes the results tables."""

import os

from .facts import teacher_sources


def summary(facts: dict) -> str:
    student = facts["student"]
    task = facts["task"].replace("-", " ")
    shape = []
    if student["num_hidden_layers"] is not None:
        shape.append(f"{student['num_hidden_layers']} layers")
    if student["hidden_size"] is not None:
        shape.append(f"hidden {student['hidden_size']}")
    line = f"A {student['parameters'] / 1e6:.1f}M-parameter {student['architecture']}"
    line += f" ({', '.join(shape)})" if shape else ""
    line += f" for {task}"
    teachers = teacher_sources(facts)
    if teachers:
        links = [
            f"[{source['hub_id']}](https://huggingface.co/{source['hub_id']})"
            if source["hub_id"]
            else f"`{os.path.basename(source['name'].rstrip('/'))}` (a local model, not published)"
            for source in teachers
        ]
        line += (
            f", distilled from the teacher {links[0]}"
            if len(links) == 1
            else (
                f", distilled from {len(links)} teachers at once ({', '.join(links)}; the first one is the reference)"
            )
        )
    line += f" on {dataset_link(facts['dataset'])}, with labels {', '.join(map(str, facts['labels']))}."
    results = facts.get("results") or {}
    if results.get("teacher"):
        s, t = results["student"], results["teacher"]
        # A teacher that got nothing right (an untrained one, a tiny evaluation set) has no accuracy to keep a share of.
        if t["accuracy"]:
            accuracy = f"keeps {s['accuracy'] / t['accuracy']:.0%} of its accuracy "
            accuracy += f"({s['accuracy']:.3f} vs {t['accuracy']:.3f})"
        else:
            accuracy = f"scores an accuracy of {s['accuracy']:.3f} where it scores 0"
        line += (
            f" It is {s['compression']:.1f}× smaller and {s['speedup']['batch_1']:.1f}× faster on CPU (batch 1) "
            f"than its teacher, {accuracy} and predicts its class {s['top1_agreement']:.0%} of the time."
        )
        explanations = results.get("explanations")
        rho = explanations and explanations["agreement"]["spearman"]
        if rho and rho["mean"] is not None and rho["mean"] == rho["mean"]:  # None or NaN: undefined for every example
            overlap = explanations["agreement"]["top_k_overlap"]
            line += (
                f" Its explanations agree with the teacher's with Spearman ρ = {rho['mean']:.2f} (0 by chance); "
                f"their top-20% features overlap {overlap['mean']:.2f} ({overlap['random']:.2f} by chance)."
            )
            method = explanations["settings"]["method"].replace("_", " ")
            trained = explanations.get("trained_method")
            trained_rho = trained and trained["agreement"]["spearman"]["mean"]
            if trained_rho is not None and trained_rho == trained_rho:
                line += (
                    f" It was trained to match the teacher's {trained['method'].replace('_', ' ')} attributions, by "
                    f"which the agreement is ρ = {trained_rho:.2f}; the figures above judge it by {method}."
                )
    return line


def dataset_link(dataset: dict) -> str:
    hub_id = dataset.get("hub_id")
    return f"[{hub_id}](https://huggingface.co/datasets/{hub_id})" if hub_id else f"`{dataset['name']}`"


def usage(facts: dict, where: str) -> str:
    if facts["task"] == "image-classification":
        return (
            "from PIL import Image\nfrom transformers import pipeline\n\n"
            f'classifier = pipeline("image-classification", model="{where}")\n'
            'print(classifier(Image.new("RGB", (28, 28))))'
        )
    example = facts["examples"][0]["text"] if facts.get("examples") else "a quiet triumph"
    return (
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n"
        f'model = AutoModelForSequenceClassification.from_pretrained("{where}")\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{where}")\n'
        f'inputs = tokenizer({example!r}, return_tensors="pt")\n'
        "probabilities = model(**inputs).logits.softmax(-1)[0]\n"
        "print({model.config.id2label[i]: round(p.item(), 3) for i, p in enumerate(probabilities)})"
    )


def onnx_usage(facts: dict, model_id: str | None, folder: str | None) -> str:
    """A snippet that runs the exported int8 graph (or the fp32 one) with onnxruntime alone, from the Hub repo or the
    local folder: the inputs the graph takes, fed from the student's own tokenizer or image processor."""
    deployment = facts["deployment"]
    graph = "onnx/model_quantized.onnx" if "onnx_int8" in deployment["models"] else "onnx/model.onnx"
    where = model_id or folder or "path/to/student"
    image = facts["task"] == "image-classification"
    lines = [] if model_id else ["import os", ""]
    lines += ["import numpy as np", "import onnxruntime as ort"]
    if model_id:
        lines.append("from huggingface_hub import hf_hub_download")
    if image:
        lines.append("from PIL import Image")
    lines += [
        f"from transformers import AutoConfig, {'AutoImageProcessor' if image else 'AutoTokenizer'}",
        "",
        f'graph = hf_hub_download("{where}", "{graph}")'
        if model_id
        else f'graph = os.path.join("{where}", "{graph}")',
        "session = ort.InferenceSession(graph)",
        f'config = AutoConfig.from_pretrained("{where}")',
    ]
    if image:
        lines += [
            f'processor = AutoImageProcessor.from_pretrained("{where}")',
            'image = Image.new("L" if config.num_channels == 1 else "RGB", (28, 28))',
            'feeds = {"pixel_values": processor(image, return_tensors="np")["pixel_values"].astype(np.float32)}',
        ]
    else:
        example = facts["examples"][0]["text"] if facts.get("examples") else "a quiet triumph"
        lines += [
            f'tokenizer = AutoTokenizer.from_pretrained("{where}")',
            f'inputs = tokenizer([{example!r}], return_tensors="np")',
            'zeros = np.zeros_like(inputs["input_ids"])  # token_type_ids, if the graph takes them and the tokenizer gives none',
            "feeds = {i.name: inputs.get(i.name, zeros).astype(np.int64) for i in session.get_inputs()}",
        ]
    lines += [
        'logits = session.run(["logits"], feeds)[0][0]',
        "probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()",
        "print({config.id2label[i]: round(float(p), 3) for i, p in enumerate(probabilities)})",
    ]
    return "\n".join(lines)


def recipe_value(value) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return "–" if value is None else str(value)


def dataset_line(facts: dict) -> str:
    """Where the results come from, and whether that split was held out of training and of its evaluations."""
    split, evaluated = facts["results"]["dataset"]["split"], facts["dataset"].get("eval_split")
    provenance = (
        "the split training evaluated on, so not held out"
        if split == evaluated
        else f"held out: neither trained on nor evaluated on during training (that was `{evaluated}`)"
    )
    return (
        f"On {facts['dataset']['name']}, split `{split}` ({facts['results']['dataset']['num_examples']} examples; "
        f"{provenance}):"
    )


def _minutes(seconds: float | None) -> str:
    return "not recorded" if seconds is None else f"{seconds / 60:.1f} min"


def training_data(facts: dict) -> list[str]:
    """The *Training data* bullets: source, sizes, label balance, which split is held out."""
    dataset, data = facts["dataset"], facts.get("data") or {}
    lines = [
        f"Dataset: {dataset_link(dataset)}" + (f", config `{dataset['config']}`" if dataset.get("config") else "")
    ]
    if dataset.get("source"):
        lines[0] += f"; read offline from {dataset['source']} (`{dataset['name']}`), not downloaded from the Hub"
    split = dataset.get("train_split", "train")
    train = data.get("train_labels")
    if data.get("train_examples") is not None:
        line = f"Trained on split `{split}`: {data['train_examples']:,} examples"
        if train:
            labelled = sum(train["labelled"].values())
            balance = ", ".join(f"{label} {count:,} ({count / max(labelled, 1):.0%})" for label, count in
                                train["labelled"].items())  # fmt: skip
            line += f"; {labelled:,} labelled ({balance})"
            if train["unlabelled"]:
                line += f" and {train['unlabelled']:,} unlabelled, which learn from the teacher's soft labels alone"
        lines.append(line)
    if data.get("eval_examples") is not None:
        lines.append(
            f"Evaluated during training on split `{dataset['eval_split']}`: {data['eval_examples']:,} examples"
        )
    results = (facts.get("results") or {}).get("dataset")
    if results:
        held_out = results["split"] != dataset.get("eval_split")
        lines.append(
            f"Reported on split `{results['split']}`: {results['num_examples']:,} examples, "
            + ("held out of training and of its evaluations" if held_out else "the split training evaluated on")
        )
    return lines


def compute_lines(facts: dict) -> list[str]:
    compute = facts.get("compute") or {}
    if not compute:
        return []
    teacher = compute.get("teacher_seconds")
    return [
        f"Hardware: {compute.get('hardware', 'not recorded')}",
        f"Teacher fine-tuning: {_minutes(teacher)}"
        + (" (its training loop)" if teacher is not None else " (no `train_results.json` in the teacher's folder)"),
        f"Student distillation: {_minutes(compute.get('student_seconds'))} (loading, teacher cache and training)",
        f"Evaluation report (accuracy, agreement, explanations, speed): {_minutes(compute.get('report_seconds'))}",
    ]


def figure_counts(results: dict) -> list[str]:
    """How many examples each kind of figure comes from, for the limitations."""
    counts = []
    if results.get("dataset"):
        counts.append(f"accuracy, agreement and KL: {results['dataset']['num_examples']:,} examples")
    explanations = results.get("explanations") or {}
    if explanations.get("num_examples"):
        counts.append(f"explanation agreement and faithfulness: {explanations['num_examples']:,} examples")
    if (results.get("global") or {}).get("num_examples"):
        counts.append(f"global behaviour: {results['global']['num_examples']:,} examples")
    return counts
