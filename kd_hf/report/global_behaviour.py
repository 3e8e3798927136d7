"""The global report (`kd_hf.interpret.global_report`) in Markdown, for `eval_report.md` and the explanation card's
"Global behaviour" section."""

from .numbers import figure, percent


ROLES = ("teacher", "student")


def _number(value, digits: int = 2) -> str:
    """A rate, correlation or similarity: always `digits` decimals, even when it is a whole number."""
    return figure(float(value) if isinstance(value, int) else value, digits)


def global_summary(report: dict) -> str:
    """The global report in Markdown: a teacher / student table, top features per class, the surrogates' rules and
    the plots (paths relative to the evaluation folder)."""
    text = report["settings"]["task"] == "text-classification"
    rules, layers = report["surrogate"], report["representation"]
    lines = [
        _how_measured(report, text),
        "",
        "| | teacher | student |",
        "|---|---|---|",
        *(f"| {name} | {t} | {s} |" for name, t, s in _comparison_rows(report, text)),
        "",
        *_class_importance(report["importance"], text),
        "",
        f"![global importance]({report['importance']['png']})",
        "",
        f"![representations]({layers['png']}) ![CKA per layer]({layers['cka_png']})",
        "",
    ]
    for role in ROLES:
        lines += [
            f"The {role}'s surrogate rules (fidelity {_number(rules[role]['fidelity'])}, "
            f"features: {rules['features']}):",
            "",
            "```text",
            rules[role]["rules"].rstrip(),
            "```",
            "",
        ]
    return "\n".join(lines)


def _comparison_rows(report: dict, text: bool) -> list[tuple[str, str, str]]:
    """(measure, teacher, student) rows: surrogate trees, shared top features, CKA, robustness of explanations."""
    importance_, rules, layers = report["importance"], report["surrogate"], report["representation"]
    robust = report["robustness"]
    pairs = ", ".join(f"{p['student_layer']}↔{p['teacher_layer']}: {p['cka']:.2f}" for p in layers["layers"])
    rows = [
        (
            f"surrogate tree fidelity (depth {rules['max_depth']}, {rules['test_examples']} held-out examples; "
            "no-rule tree in brackets)",
            *(
                f"{_number(rules[role]['fidelity'])} ({_number(rules[role].get('majority_fidelity'))})"
                for role in ROLES
            ),
        ),
        (
            "surrogate tree accuracy on the true labels",
            _number(rules["teacher"]["accuracy"]),
            _number(rules["student"]["accuracy"]),
        ),
        (
            f"top-{importance_['top_k']} {'words' if text else 'cells'} per class shared with the teacher (mean over "
            "classes)",
            "–",
            _number(importance_["mean_overlap"]),
        ),
        ("linear CKA with the teacher, penultimate representation", "1.00", _number(layers["penultimate_cka"])),
        ("linear CKA per mapped layer (student↔teacher)", "–", pairs or "–"),
        (
            "explanation max-sensitivity (lower is steadier)",
            _number(robust["teacher"]["sensitivity_max"], 3),
            _number(robust["student"]["sensitivity_max"], 3),
        ),
    ]
    perturbations = (
        [("drop_word", "least important word dropped")]
        if text
        else [("noise", "Gaussian noise"), ("fgsm", "one FGSM step")]
    )
    for key, words in perturbations:
        for measure, name in (
            ("spearman", "Spearman ρ of explanations before/after"),
            ("flip_rate", "predictions flipped"),
        ):
            rows.append(
                (
                    f"{words}: {name}",
                    _number(robust["teacher"][key][measure]),
                    _number(robust["student"][key][measure]),
                )
            )
    return rows


def _how_measured(report: dict, text: bool) -> str:
    settings, perturbations = report["settings"], report["robustness"]["settings"]
    return (
        f"{report['num_examples']} examples {settings.get('sample', '')}; {settings['method']}, each model explaining "
        f"its own prediction. Robustness on the first {perturbations['examples']} of them: max-sensitivity over "
        f"{perturbations['n_perturb_samples']} uniform perturbations within {perturbations['radius']} standard "
        "deviations of the inputs"
        + (
            ""
            if text
            else f", Gaussian noise of {perturbations.get('noise')} and one FGSM step of "
            f"{perturbations.get('fgsm_epsilon')} standard deviations of the pixels"
        )
        + ". Intervals are bootstrap 95%."
    )


def _class_importance(importance_: dict, text: bool) -> list[str]:
    """Each class's top words for both models (text), or the share of top patch-grid cells (images)."""
    k = importance_["top_k"]
    if not text:
        shared = ", ".join(f"{name}: {percent(c['overlap'])}" for name, c in importance_["classes"].items())
        return [f"Top-{k} patch-grid cells shared with the teacher, per class: {shared}."]
    lines = [f"| class | teacher's top-{k} words | student's top-{k} words | shared |", "|---|---|---|---|"]
    for name, both in importance_["classes"].items():
        words = [", ".join(w["word"] for w in both[role]) or "–" for role in ROLES]
        lines.append(f"| {name} | {words[0]} | {words[1]} | {percent(both['overlap'])} |")
    return lines
