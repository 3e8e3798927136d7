"""The evaluation report and the explanation card that a distillation run leaves in its output folder."""

import json
import re
import subprocess
import sys

import pytest
import yaml
from huggingface_hub import ModelCard

from kd_hf.card import card_facts, is_hub_id, render_card, space_readme
from kd_hf.card.text import summary
from kd_hf.cli import main


SECTIONS = ["## How to use", "## Distillation recipe", "## Results", "## Model examination", "## Limitations"]


@pytest.fixture
def run_folder(tiny_text_project, tmp_path):
    recipe = tiny_text_project(
        explanation_examples=3,
        card_examples=2,
        hub_token="hf_NeverWrittenAnywhere",
        eval_strategy="steps",
        eval_steps=2,
    )
    main(["distill", str(recipe)])
    return tmp_path / "student"


@pytest.mark.slow
def test_distill_writes_a_card_whose_numbers_match_eval_results(run_folder):
    results = json.loads((run_folder / "eval_results.json").read_text())
    student, teacher = results["student"], results["teacher"]
    assert {"accuracy", "macro_f1", "top1_agreement", "predictive_kl", "parameters", "size_mb", "speedup"} <= set(
        student
    )
    assert results["explanations"]["num_examples"] == 3
    assert set(results["explanations"]["agreement"]) == {"spearman", "kendall", "top_k_overlap", "cosine"}

    card = ModelCard.load(run_folder / "README.md")
    text = card.text
    positions = [text.index(section) for section in SECTIONS]
    assert positions == sorted(positions), "sections out of order"
    assert "## Citation" in text
    # Metadata: what the Hub indexes.
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "text-classification"
    assert {"knowledge-distillation", "explainability", "kd_hf"} <= set(data.tags)
    assert data.base_model is None  # the teacher is a local folder, not a Hub id
    metrics = {result.metric_type: result.metric_value for result in data.eval_results}
    assert metrics["accuracy"] == pytest.approx(student["accuracy"], abs=1e-4)
    assert metrics["top1_agreement"] == pytest.approx(student["top1_agreement"], abs=1e-4)
    # Defined for this data, so compared unconditionally (an undefined one is null in the JSON, and left out here).
    spearman = results["explanations"]["agreement"]["spearman"]["mean"]
    assert spearman is not None
    assert metrics["explanation_spearman"] == pytest.approx(spearman, abs=1e-4)
    assert metrics["explanation_top_k_overlap"] == pytest.approx(
        results["explanations"]["agreement"]["top_k_overlap"]["mean"], abs=1e-4
    )
    # The body: the same figures, teacher vs student, and the random-attribution baseline.
    assert f"| accuracy | {teacher['accuracy']:.3f} | {student['accuracy']:.3f} |" in text
    assert f"| top-1 agreement with the teacher | 1 | {student['top1_agreement']:.3f} |" in text
    random = results["explanations"]["agreement"]["top_k_overlap"]["random"]
    assert re.search(rf"\| top k overlap \| .* \| {random:.3f} \|", text)
    assert f"{student['parameters']:,}" in text and f"{teacher['parameters']:,}" in text
    # Every picture the card shows is in the folder; two examples, as the recipe asked.
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert images and all((run_folder / image).is_file() for image in images)
    assert sum("_student.png" in image for image in images) == 2
    # The machine-readable facts say the same.
    facts = json.loads((run_folder / "explanation_card.json").read_text())
    assert facts["teacher"] == str(run_folder.parent / "teacher")
    assert facts["results"] == results
    assert facts["recipe"]["loss_type"] == ["soft_label"] and facts["recipe"]["steps"] == 4
    assert len(facts["examples"]) == 2 and all(example["text"] for example in facts["examples"])


@pytest.mark.slow
def test_the_cards_usage_snippet_runs_with_plain_transformers(run_folder):
    text = (run_folder / "README.md").read_text()
    snippet = re.search(r"## How to use.*?```python\n(.*?)```", text, re.S).group(1)
    assert "kd_hf" not in snippet
    output = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, check=True, env={"HF_HUB_OFFLINE": "1"}
    ).stdout
    probabilities = eval(output)  # noqa: S307  (a dict of label -> probability printed by the snippet)
    assert set(probabilities) == {"negative", "positive"}
    assert sum(probabilities.values()) == pytest.approx(1, abs=2e-3)


@pytest.mark.slow
def test_checkpoints_carry_the_card_and_no_file_holds_the_token(run_folder):
    # A checkpoint's card reports the evaluation of the run so far (the full report comes at the end).
    checkpoint = json.loads((run_folder / "checkpoint-2" / "explanation_card.json").read_text())
    assert checkpoint["recipe"]["steps"] == 2 and checkpoint["results"]["student"]["step"] == 2
    card = (run_folder / "checkpoint-2" / "README.md").read_text()
    assert f"| accuracy | – | {checkpoint['results']['student']['accuracy']:.3f} |" in card
    for path in run_folder.rglob("*"):
        if path.is_file():
            assert b"hf_NeverWrittenAnywhere" not in path.read_bytes(), path


@pytest.mark.parametrize(
    ("dataset", "transfer", "files", "expected"),
    [
        ("rotten_tomatoes", "stanfordnlp/imdb", None, ["rotten_tomatoes", "stanfordnlp/imdb"]),  # a Hub transfer set
        ("offline:rotten_tomatoes", "offline:imdb_sentences", None, ["cornell-movie-review-data/rotten_tomatoes"]),
        ("csv", "csv", ["unlabelled.csv"], None),  # datasets' own builders name no dataset on the Hub
        ("rotten_tomatoes", "rotten_tomatoes", None, ["rotten_tomatoes"]),
    ],
)
def test_card_and_space_list_the_hub_datasets_the_student_learnt_from(
    distill_args, make_bert, dataset, transfer, files, expected
):
    args = distill_args(dataset_name=dataset, transfer_dataset_name=transfer, transfer_data_files=files)
    facts = card_facts(args, make_bert(), results=None, steps=10, model_id="me/student")
    assert render_card(facts).data.datasets == expected
    front = space_readme("me/student", facts).split("---")[1]
    assert yaml.safe_load(front).get("datasets") == expected
    assert facts["dataset"]["transfer"]["name"] == transfer


def test_card_without_evaluation_says_so_and_links_a_hub_teacher(distill_args, make_bert):
    args = distill_args(
        teacher_model_name_or_path="sentence-transformers/all-MiniLM-L6-v2",
        dataset_name="rotten_tomatoes",
        hub_space_id="me/student-demo",
        card_license="apache-2.0",
    )
    facts = card_facts(args, make_bert(), results=None, steps=10, model_id="me/student")
    card = render_card(facts)
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert card.data.datasets == ["rotten_tomatoes"] and card.data.license == "apache-2.0"
    assert card.data.eval_results is None
    assert "No evaluation has been run yet" in card.text
    assert 'from_pretrained("me/student")' in card.text
    assert "https://huggingface.co/spaces/me/student-demo" in card.text
    assert json.loads(json.dumps(facts)) == facts  # JSON-serialisable as it is


@pytest.mark.parametrize("teacher_accuracy", [0.8, 0.0])
def test_the_summary_gives_the_share_of_the_teachers_accuracy_only_when_it_has_one(teacher_accuracy):
    """A tiny or untrained teacher can score 0 on a small evaluation set: the card still renders."""
    student = {
        "num_hidden_layers": 2,
        "hidden_size": 16,
        "parameters": 40_000,
        "architecture": "BertForSequenceClassification",
    }
    results = {
        "student": {"compression": 5.0, "speedup": {"batch_1": 3.0}, "accuracy": 0.6, "top1_agreement": 0.5},
        "teacher": {"accuracy": teacher_accuracy},
    }
    facts = {"student": student, "task": "text-classification", "teacher": "tiny-teacher", "labels": ["a", "b"],
             "dataset": {"name": "local.csv", "hub_id": None}, "results": results}  # fmt: skip

    line = summary(facts)

    if teacher_accuracy:
        assert "keeps 75% of its accuracy (0.600 vs 0.800)" in line
    else:
        assert "scores an accuracy of 0.600 where it scores 0" in line
    assert "predicts its class 50% of the time" in line


@pytest.mark.parametrize(
    "name, expected",
    [("user/model", True), ("bert-base-uncased", True), ("offline:all-MiniLM-L6-v2", False), ("./teacher", False),
     ("/abs/teacher", False), ("a/b/c", False), (None, False)],
)  # fmt: skip
def test_is_hub_id(name, expected):
    assert is_hub_id(name) is expected


@pytest.mark.slow
def test_report_and_card_use_the_held_out_test_split_when_there_is_one(tiny_text_project, tmp_path, caplog):
    import shutil

    rows = (tmp_path / "validation.csv").read_text().splitlines()
    (tmp_path / "test.csv").write_text("\n".join(rows[:11]) + "\n")  # header + 10 snippets, fewer than validation
    files = {split: str(tmp_path / f"{split}.csv") for split in ("train", "validation", "test")}
    main(["distill", str(tiny_text_project(data_files=files, explanation_examples=0))])
    results = json.loads((tmp_path / "student" / "eval_results.json").read_text())
    assert results["dataset"]["split"] == "test" and results["dataset"]["num_examples"] == 10
    card = (tmp_path / "student" / "README.md").read_text()
    assert "split `test` (10 examples; held out: neither trained on nor evaluated on during training" in card

    # Without a test split the report falls back to the validation split, and says so.
    shutil.rmtree(tmp_path / "student")
    with caplog.at_level("WARNING", logger="kd_hf"):
        main(["distill", str(tiny_text_project(explanation_examples=0))])
    assert "No 'test' split to report on (splits: train, validation)" in caplog.text
    assert (
        "split `validation` (16 examples; the split training evaluated on, so not held out)"
        in (tmp_path / "student" / "README.md").read_text()
    )


@pytest.mark.slow
def test_a_student_trained_on_another_attribution_is_also_judged_by_it(tiny_text_project, tmp_path):
    from kd_hf.explain.compare import compare_explanations
    from kd_hf.pairing import load_model, load_processor

    fields = dict(loss_type=["soft_label", "attribution"], loss_weights=[1.0, 0.5], explanation_examples=4)
    main(["distill", str(tiny_text_project(attribution_method="input_x_gradient", **fields))])
    student = tmp_path / "student"
    results = json.loads((student / "eval_results.json").read_text())
    explanations = results["explanations"]
    assert explanations["settings"]["method"] == "integrated_gradients"
    assert explanations["trained_method"]["method"] == "input_x_gradient"
    # The trained method's figure is that of the explainer, on the same examples.
    texts = [example["text"] for example in explanations["examples"]]
    again = compare_explanations(
        load_model(str(tmp_path / "teacher"), False), load_model(str(student), False), texts,
        load_processor(str(student), False), load_processor(str(tmp_path / "teacher"), False),
        method="input_x_gradient", max_length=32,
    )  # fmt: skip
    rho = explanations["trained_method"]["agreement"]["spearman"]["mean"]
    assert rho == pytest.approx(again["agreement"]["spearman"]["mean"], abs=1e-6)
    assert (
        f"trained to match the teacher's input x gradient attributions, by which the agreement is ρ = {rho:.2f}"
        in ((student / "README.md").read_text())
    )

    # Trained on integrated gradients, the method the report judges by: nothing more to add.
    main(["distill", str(tiny_text_project(attribution_method="integrated_gradients", attribution_n_steps=2,
                                           overwrite_output_dir=True, **fields))])  # fmt: skip
    assert "trained_method" not in json.loads((student / "eval_results.json").read_text())["explanations"]


def test_the_card_reports_loss_steps_only_when_a_loss_stopped_early(distill_args, make_bert):
    def card_text(**fields):
        return render_card(card_facts(distill_args(**fields), make_bert(), results=None, steps=10)).text

    two_stages = card_text(loss_type=["soft_label", "hidden_state"], loss_steps=[0, 4])
    assert "| optimizer steps each loss trained for (0 = the whole run) | 0, 4 |" in two_stages
    assert "optimizer steps each loss trained for" not in card_text(loss_type=["soft_label", "hidden_state"])
