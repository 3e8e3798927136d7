"""Push a distilled student and its Space to a (loopback) Hub, and pull it back with plain transformers."""

import hashlib
import json

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from kd_hf.cli import main
from kd_hf.hub import load_student, push_student


REPO, SPACE = "kd-hf-tester/tiny-student", "kd-hf-tester/tiny-student-demo"


@pytest.fixture
def student_folder(tiny_text_project, tmp_path):
    """What `kd-hf distill` leaves: a tiny student with checkpoints, card, report and example explanations."""
    main(["distill", str(tiny_text_project(explanation_examples=2, card_examples=2))])
    return tmp_path / "student"


def snapshot(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


def front_matter(text: str) -> dict:
    return yaml.safe_load(text.split("---")[1])


def logits(model, tokenizer):
    with torch.no_grad():
        return model(**tokenizer(["a great film", "a dull and boring cast"], return_tensors="pt", padding=True)).logits


@pytest.mark.slow
def test_pushed_student_and_space_load_back_from_the_hub(hub_server, student_folder):
    before = snapshot(student_folder)
    urls = push_student(str(student_folder), REPO, space_id=SPACE)
    assert urls["model"].endswith(REPO) and urls["space"].endswith(SPACE)
    assert snapshot(student_folder) == before  # the local folder is only read

    # The model repo: published files only, and plain transformers loads the same model from it.
    files = hub_server.files(REPO)
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "explanation_card.json"} <= set(files)
    assert {"eval_results.json", "explanations/000_teacher.png", "confusion_matrix.png"} <= set(files)
    assert not [name for name in files if name.startswith("checkpoint-") or name == "training_args.bin"]
    local = AutoModelForSequenceClassification.from_pretrained(student_folder)
    pulled = AutoModelForSequenceClassification.from_pretrained(REPO)
    tokenizer = AutoTokenizer.from_pretrained(REPO)
    torch.testing.assert_close(logits(pulled, tokenizer), logits(local, tokenizer), rtol=0, atol=0)

    # The card: metadata with kd_hf's metrics, the repo id in the usage snippet, the Space linked.
    card = ModelCard.load(REPO)
    metrics = {result.metric_type for result in card.data.eval_results}
    assert {"accuracy", "top1_agreement", "explanation_top_k_overlap"} <= metrics
    assert f'from_pretrained("{REPO}")' in card.text and f"spaces/{SPACE}" in card.text
    assert json.loads(files["explanation_card.json"])["space_id"] == SPACE

    # The Space: a Gradio app with its requirements, linked to the student.
    space = hub_server.files(SPACE, repo_type="space")
    assert {"app.py", "requirements.txt", "README.md", "kd_hf/__init__.py"} <= set(space)
    metadata = front_matter(space["README.md"].decode())
    assert metadata["sdk"] == "gradio" and metadata["app_file"] == "app.py" and metadata["models"] == [REPO]

    # kd_hf's pull: the model, its tokenizer and the card's facts (the teacher, for the demo).
    student = load_student(REPO)
    assert student.card["teacher"] == str(student_folder.parent / "teacher")
    torch.testing.assert_close(logits(student.model, student.processor), logits(local, tokenizer), rtol=0, atol=0)


@pytest.mark.slow
def test_a_second_push_updates_the_repos_in_place(hub_server, student_folder, capsys):
    main(["push", str(student_folder), "--repo-id", REPO, "--space-id", SPACE])
    first = hub_server.files(REPO)
    (student_folder / "eval_report.md").write_text("# re-evaluated\n")
    main(["push", str(student_folder), "--repo-id", REPO, "--space-id", SPACE])
    second = hub_server.files(REPO)
    assert second["eval_report.md"] == b"# re-evaluated\n" and first["eval_report.md"] != second["eval_report.md"]
    assert second["model.safetensors"] == first["model.safetensors"]
    assert f"model: {hub_server.url}/{REPO}" in capsys.readouterr().out


@pytest.mark.slow
def test_push_to_a_hub_that_is_down_fails_clearly_and_keeps_the_folder(dead_endpoint, student_folder):
    before = snapshot(student_folder)
    with pytest.raises(SystemExit, match="local folder is unchanged.*push again"):
        main(["push", str(student_folder), "--repo-id", REPO])
    assert snapshot(student_folder) == before


@pytest.mark.slow
def test_push_to_hub_in_a_recipe_pushes_student_and_space_at_the_end(hub_server, tiny_text_project, tmp_path):
    recipe = tiny_text_project(push_to_hub=True, hub_model_id=REPO, hub_space_id=SPACE, explanation_examples=0)
    main(["distill", str(recipe)])
    files = hub_server.files(REPO)
    assert {"model.safetensors", "README.md", "explanation_card.json"} <= set(files)
    assert "app.py" in hub_server.files(SPACE, repo_type="space")
    assert hub_server.token.encode() not in b"".join(files.values())


def test_push_refuses_a_folder_without_safetensors(tmp_path):
    with pytest.raises(SystemExit, match="no model saved as safetensors"):
        main(["push", str(tmp_path), "--repo-id", REPO])


def test_load_student_without_a_card_reads_the_task_from_the_config(tmp_path, make_vit):
    make_vit().save_pretrained(tmp_path / "vit")
    student = load_student(str(tmp_path / "vit"))
    assert student.card == {} and student.is_image_model
    assert student.processor.size["height"] == 8  # a default image processor for the config's image size
