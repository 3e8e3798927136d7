import ast
import fnmatch
import os
import runpy

import evaluate
import numpy as np
import pytest
import yaml

from kd_hf.metrics import MODULES, module_path
from kd_hf.metrics.explanation import AGREEMENT_METRICS, agreement, bootstrap_interval, chance_agreement


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACE_FILES = ("{name}.py", "README.md", "app.py", "requirements.txt")


def _curves(rng, n_examples=6):
    """Random probabilities of the explained class, shaped as `kd_hf.metrics.faithfulness` measures them."""
    inputs = {name: [] for name in ("full_probability", "comprehensiveness_probabilities", "sufficiency_probabilities",
                                    "deletion_curve", "insertion_curve", "curve_fractions")}  # fmt: skip
    for _ in range(n_examples):
        steps, n_features = int(rng.integers(2, 12)), int(rng.integers(3, 40))
        inputs["full_probability"].append(float(rng.random()))
        inputs["comprehensiveness_probabilities"].append(rng.random(5).tolist())
        inputs["sufficiency_probabilities"].append(rng.random(5).tolist())
        inputs["deletion_curve"].append(rng.random(steps + 1).tolist())
        inputs["insertion_curve"].append(rng.random(steps + 1).tolist())
        inputs["curve_fractions"].append([round(i * n_features / steps) / n_features for i in range(steps + 1)])
    return inputs


@pytest.mark.parametrize("name", MODULES)
def test_each_module_loads_offline_from_its_package_folder(name):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    module = evaluate.load(module_path(name))
    assert isinstance(module, evaluate.Metric) and module.name == name
    assert module.info.citation and "Returns:" in module.info.inputs_description


def test_unknown_module_name_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="explanation_agreement, faithfulness") as error:
        module_path("explanation_agreemnt")
    assert "'explanation_agreemnt'" in str(error.value)


def test_agreement_module_equals_the_package_functions_on_random_variable_length_inputs():
    rng = np.random.default_rng(0)
    teacher = [rng.standard_normal(int(rng.integers(1, 30))) for _ in range(40)]
    student = [t + rng.standard_normal(t.size) for t in teacher]
    student[3] = np.ones(student[3].size)  # constant: rank correlations undefined there

    results = evaluate.load(module_path("explanation_agreement")).compute(
        predictions=student, references=teacher, top_k=0.3, seed=5
    )

    for metric in AGREEMENT_METRICS:
        values = [agreement(t, s, 0.3)[metric] for t, s in zip(teacher, student)]
        mean, low, high = bootstrap_interval(values, seed=5)
        random = bootstrap_interval([chance_agreement(t, s, 0.3)[metric] for t, s in zip(teacher, student)], seed=5)
        expected = {"mean": mean, "low": low, "high": high, "random": random[0], "n": int(np.sum(~np.isnan(values)))}
        assert results[metric] == expected
    assert results["spearman"]["n"] < 40 == results["cosine"]["n"]


def test_agreement_module_gives_one_for_identical_and_minus_one_for_reversed_attributions():
    module = evaluate.load(module_path("explanation_agreement"))
    scores = [[0.1, 0.5, -0.2, 0.9, 0.3], [2.0, 1.0, 3.0]]

    same = module.compute(predictions=scores, references=scores)
    reversed_ = module.compute(predictions=[[-x for x in s] for s in scores], references=scores)

    assert same["spearman"]["mean"] == same["kendall"]["mean"] == pytest.approx(1.0)
    assert same["top_k_overlap"]["mean"] == 1.0 and same["cosine"]["mean"] == pytest.approx(1.0)
    assert reversed_["spearman"]["mean"] == reversed_["kendall"]["mean"] == pytest.approx(-1.0)
    assert same["spearman"]["random"] == 0.0 and same["spearman"]["n"] == 2


def test_explanation_agreement_computes_through_the_module_and_flattens_grids(monkeypatch):
    import kd_hf.metrics.modules as modules
    from kd_hf.metrics.explanation import explanation_agreement

    calls = _spy(monkeypatch, modules)
    rng = np.random.default_rng(1)
    teacher = [rng.random((4, 4)) for _ in range(5)]
    student = [t + 0.1 * rng.random((4, 4)) for t in teacher]

    report = explanation_agreement(teacher, student, seed=3)

    [(name, inputs, output)] = calls
    assert name == "explanation_agreement" and report == output
    assert [len(p) for p in inputs["predictions"]] == [16] * 5
    direct = evaluate.load(module_path(name)).compute(
        predictions=[s.ravel() for s in student], references=[t.ravel() for t in teacher], seed=3
    )
    assert report == direct
    with pytest.raises(ValueError, match="align them first"):
        explanation_agreement([np.ones(3)], [np.ones(4)])


def test_faithfulness_module_equals_aopc_and_trapezoid_by_hand():
    inputs = _curves(np.random.default_rng(2))

    results = evaluate.load(module_path("faithfulness")).compute(**inputs)

    full = np.array(inputs["full_probability"])[:, None]
    comprehensiveness = ((full - inputs["comprehensiveness_probabilities"]).sum(1) / 6).mean()
    sufficiency = ((full - inputs["sufficiency_probabilities"]).sum(1) / 6).mean()
    auc = {
        curve: np.mean([np.trapezoid(y, x) for y, x in zip(inputs[curve], inputs["curve_fractions"])])
        for curve in ("deletion_curve", "insertion_curve")
    }
    assert results == pytest.approx(
        {"comprehensiveness": comprehensiveness, "sufficiency": sufficiency,
         "deletion_auc": auc["deletion_curve"], "insertion_auc": auc["insertion_curve"]}, rel=1e-12
    )  # fmt: skip


def test_faithfulness_module_on_one_example_gives_that_examples_figures():
    from kd_hf.metrics.faithfulness import faithfulness_scores

    inputs = _curves(np.random.default_rng(3), n_examples=1)
    results = evaluate.load(module_path("faithfulness")).compute(**inputs)
    assert results == faithfulness_scores(*(values[0] for values in inputs.values()))
    with pytest.raises(ValueError, match="one fraction a point"):
        faithfulness_scores(0.5, [0.1], [0.2], [0.3, 0.2], [0.1, 0.4], [0.0, 0.5, 1.0])


@pytest.mark.slow
def test_kd_hf_eval_reports_the_modules_figures(monkeypatch, tmp_path, make_bert, minilm_tokenizer):
    import csv

    import kd_hf.metrics.modules as modules
    from kd_hf.evaluation import evaluate_student

    for name, layers in (("teacher", 2), ("student", 1)):
        make_bert(layers=layers, seed=layers).save_pretrained(tmp_path / name)
        minilm_tokenizer.save_pretrained(tmp_path / name)
    with open(tmp_path / "validation.csv", "w", newline="") as file:
        csv.writer(file).writerows([("text", "label"), ("a dull and tired film", 0), ("a fine , smart film", 1)])
    calls = _spy(monkeypatch, modules)

    results = evaluate_student(
        str(tmp_path / "student"), str(tmp_path / "teacher"), "csv", str(tmp_path / "out"),
        data_files={"train": str(tmp_path / "validation.csv"), "validation": str(tmp_path / "validation.csv")},
        explanation_examples=2, explanation_method="input_x_gradient", latency_repeats=1,
    )  # fmt: skip

    agreements = [output for name, _, output in calls if name == "explanation_agreement"]
    faithful = [output for name, _, output in calls if name == "faithfulness"]
    assert agreements and results["explanations"]["agreement"] == agreements[0]
    assert len(faithful) >= 2  # one per explained example of the student, and of the teacher unless cached
    student = results["explanations"]["faithfulness"]["student"]
    for metric in ("comprehensiveness", "deletion_auc"):
        assert student[metric]["mean"] == pytest.approx(np.mean([row[metric] for row in faithful[-2:]]), rel=1e-12)


@pytest.mark.parametrize("name", MODULES)
def test_each_folder_is_a_metric_space(name, monkeypatch):
    folder = module_path(name)
    for file in SPACE_FILES:
        assert os.path.isfile(os.path.join(folder, file.format(name=name))), file
    card = open(os.path.join(folder, "README.md"), encoding="utf-8").read()
    assert card.startswith("---\n")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py" and front["pinned"] is False
    assert set(front["tags"]) == {"evaluate", "metric"} and len(front["description"]) > 50
    assert {"title", "emoji", "colorFrom", "colorTo", "sdk_version"} <= set(front)
    assert "## Citation" in card and "```python" in card
    requirements = open(os.path.join(folder, "requirements.txt")).read().split()
    assert any(line.startswith("evaluate") for line in requirements)

    launched = []
    monkeypatch.setattr(evaluate.utils, "launch_gradio_widget", launched.append)  # the widget needs gradio 3
    runpy.run_path(os.path.join(folder, "app.py"))
    [module] = launched
    assert isinstance(module, evaluate.Metric) and module.name == name


@pytest.mark.parametrize("name", MODULES)
def test_each_module_runs_without_kd_hf_and_ships_as_package_data(name):
    source = open(os.path.join(module_path(name), f"{name}.py"), encoding="utf-8").read()
    imported = {
        alias.name.split(".")[0] if isinstance(node, ast.Import) else node.module.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"datasets", "evaluate", "numpy", "scipy"}  # what its requirements.txt installs on a Space
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as file:
        patterns = tomllib.load(file)["tool"]["setuptools"]["package-data"]["kd_hf"]
    for file in ("README.md", "requirements.txt"):
        path = os.path.relpath(os.path.join(module_path(name), file), os.path.join(ROOT, "kd_hf"))
        assert any(fnmatch.fnmatch(path, pattern) for pattern in patterns), path


def _spy(monkeypatch, modules) -> list:
    """Record each `compute` kd_hf makes through its evaluate modules: `(name, inputs, output)`."""
    calls, load = [], modules._load

    class Recorder:
        def __init__(self, name):
            self.name, self.module = name, load(name)

        def compute(self, **inputs):
            output = self.module.compute(**inputs)
            calls.append((self.name, inputs, output))
            return output

    monkeypatch.setattr(modules, "_load", Recorder)
    return calls
