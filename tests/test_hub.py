"""Push a distilled student and its Space to a (loopback) Hub, and pull it back with plain transformers."""

import fnmatch
import hashlib
import json
import logging
import time

import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from kd_hf import DistillationTrainer
from kd_hf.cli import main, push_parser
from kd_hf.hub import PUSH_TIMEOUT, load_student, push_student


REPO, SPACE = "kd-hf-tester/tiny-student", "kd-hf-tester/tiny-student-demo"
TEACHER = f"{REPO}-teacher"  # where a push publishes a student's local teacher by default
# What a run leaves that must never reach the Hub, whatever pushes: arguments and recipe (local paths), Trainer's
# state, optimizer/scheduler/RNG state, the loss projections, checkpoints (any strategy) and TensorBoard logs.
NEVER_PUBLISHED = (
    "training_args.bin",
    "kd_hf_recipe.json",
    "trainer_state.json",
    "*.pt",
    "*.pth",
    "kd_hf_loss_state.safetensors",
)
NEVER_PUBLISHED_FOLDERS = ("checkpoint-*", "last-checkpoint", "runs")


@pytest.fixture
def quick_folder(tmp_path, make_bert, word_tokenizer):
    """A student folder as a run leaves it, made in a moment: weights, tokenizer, card, example explanations, and
    what stays local (pickled arguments, a checkpoint)."""
    folder = tmp_path / "quick"
    make_bert(vocab_size=len(word_tokenizer)).save_pretrained(folder)
    word_tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text("# A tiny student\n")
    (folder / "explanations").mkdir()
    for name in ("000_teacher.png", "000_student.png"):
        (folder / "explanations" / name).write_bytes(b"\x89PNG " + name.encode())
    (folder / "training_args.bin").write_bytes(b"pickled arguments with local paths")
    (folder / "checkpoint-2").mkdir()
    (folder / "checkpoint-2" / "optimizer.pt").write_bytes(b"optimizer state")
    return folder


def never_published(path: str) -> bool:
    *folders, name = path.split("/")
    return any(fnmatch.fnmatch(name, pattern) for pattern in NEVER_PUBLISHED) or any(
        fnmatch.fnmatch(folder, pattern) for folder in folders for pattern in NEVER_PUBLISHED_FOLDERS
    )


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
    assert metadata["sdk"] == "gradio" and metadata["app_file"] == "app.py" and metadata["models"] == [REPO, TEACHER]

    # kd_hf's pull: the model, its tokenizer and the card's facts (the teacher, published beside it, for the demo).
    student = load_student(REPO)
    assert student.card["teacher"] == TEACHER and card.data.base_model == TEACHER
    torch.testing.assert_close(logits(student.model, student.processor), logits(local, tokenizer), rtol=0, atol=0)


@pytest.mark.slow
def test_a_second_push_updates_the_repos_in_place(hub_server, student_folder, capsys):
    main(["push", str(student_folder), "--repo-id", REPO, "--space-id", SPACE])
    first = hub_server.files(REPO)
    (student_folder / "explanation_report.html").write_text("<p>re-explained</p>\n")
    main(["push", str(student_folder), "--repo-id", REPO, "--space-id", SPACE])
    second = hub_server.files(REPO)
    report = "explanation_report.html"
    assert second[report] == b"<p>re-explained</p>\n" and first[report] != second[report]
    assert second["model.safetensors"] == first["model.safetensors"]
    assert f"model: {hub_server.url}/{REPO}" in capsys.readouterr().out


@pytest.mark.slow
def test_push_to_a_hub_that_is_down_fails_clearly_and_keeps_the_folder(dead_endpoint, student_folder):
    before = snapshot(student_folder)
    with pytest.raises(SystemExit, match="local folder is unchanged.*push again"):
        main(["push", str(student_folder), "--repo-id", REPO])
    assert snapshot(student_folder) == before


@pytest.mark.slow
@pytest.mark.parametrize("hub_strategy", ["every_save", "checkpoint"])
def test_push_to_hub_in_a_recipe_publishes_only_the_published_files_at_every_save(
    hub_server, tiny_text_project, tmp_path, hub_strategy
):
    recipe = tiny_text_project(
        push_to_hub=True, hub_model_id=REPO, hub_space_id=SPACE, hub_strategy=hub_strategy, explanation_examples=0
    )
    main(["distill", str(recipe)])  # saves (and may push) at steps 2 and 4, then pushes at the end
    commits = hub_server.repo(REPO).commits
    assert len(commits) >= 2
    for commit in commits:  # not only at the end: no commit of the history ever held them
        assert not [path for path in commit.files if never_published(path)], commit.summary
    files = hub_server.files(REPO)
    assert {"model.safetensors", "README.md", "explanation_card.json", "tokenizer.json"} <= set(files)
    assert (tmp_path / "student" / "training_args.bin").is_file()  # it stays local
    assert "app.py" in hub_server.files(SPACE, repo_type="space")
    for repo_files in (files, hub_server.files(SPACE, repo_type="space")):
        assert hub_server.token.encode() not in b"".join(repo_files.values())


def test_push_to_hub_from_kd_hf_train_publishes_only_the_published_files(hub_server, tmp_path):
    from kd_hf import DistillationConfig
    from kd_hf.run import train

    args = DistillationConfig(
        output_dir=str(tmp_path / "teacher"), model_init="config", dataset_name="offline:digits",
        image_column="image", max_train_samples=16, max_eval_samples=8, per_device_train_batch_size=8,
        max_steps=2, save_strategy="steps", save_steps=1, use_cpu=True, report_to=[], disable_tqdm=True,
        push_to_hub=True, hub_model_id=REPO,
        model_config=dict(model_type="vit", image_size=8, patch_size=4, num_channels=1, hidden_size=16,
                          num_hidden_layers=1, num_attention_heads=2, intermediate_size=32),
    )  # fmt: skip
    train(args)
    commits = hub_server.repo(REPO).commits
    assert len(commits) >= 2  # at each save and at the end
    for commit in commits:
        assert not [path for path in commit.files if never_published(path)], commit.summary
    assert {"model.safetensors", "config.json"} <= set(hub_server.files(REPO))
    assert (tmp_path / "teacher" / "training_args.bin").is_file()


def test_push_publishes_no_symbolic_link_and_says_which_stayed_local(hub_server, quick_folder, tmp_path, caplog):
    private = tmp_path / "private"
    private.mkdir()
    (private / "id_rsa").write_text("SECRET KEY")
    (quick_folder / "keys").symlink_to(private, target_is_directory=True)  # a folder outside
    (quick_folder / "explanations" / "001_teacher.png").symlink_to(private / "id_rsa")  # a file outside
    (quick_folder / "notes.md").symlink_to(quick_folder / "README.md")  # even one that stays inside
    with caplog.at_level(logging.WARNING, logger="kd_hf"):
        push_student(str(quick_folder), REPO, space_id=SPACE)

    files = hub_server.files(REPO)
    assert {"config.json", "model.safetensors", "explanations/000_teacher.png"} <= set(files)
    assert not {"keys/id_rsa", "explanations/001_teacher.png", "notes.md"} & set(files)
    assert not [path for path in files if never_published(path)]
    for content in [*files.values(), *hub_server.files(SPACE, repo_type="space").values()]:
        assert b"SECRET KEY" not in content
    assert "symbolic links" in caplog.text
    assert all(name in caplog.text for name in ("keys", "explanations/001_teacher.png", "notes.md"))


def test_push_to_a_hub_that_never_answers_times_out_clearly(silent_endpoint, quick_folder):
    before = snapshot(quick_folder)
    start = time.monotonic()
    with pytest.raises(SystemExit, match=r"no answer within 0.5 s.*local folder is unchanged.*push again"):
        main(["push", str(quick_folder), "--repo-id", REPO, "--timeout", "0.5"])
    assert time.monotonic() - start < 10
    assert snapshot(quick_folder) == before
    assert push_parser().parse_args([str(quick_folder), "--repo-id", REPO]).timeout == PUSH_TIMEOUT == 60


@pytest.mark.parametrize(
    "ids, named",
    [
        (["--repo-id", "kd-hf-tester/bad..name"], "--repo-id"),
        (["--repo-id", REPO, "--space-id", "kd-hf-tester/my demo"], "--space-id"),
        (["--repo-id", REPO, "--space-id", SPACE], "teacher"),  # the card's teacher, the model's `base_model`
    ],
)
def test_push_checks_every_id_before_sending_anything(hub_server, quick_folder, ids, named):
    (quick_folder / "explanation_card.json").write_text(json.dumps({"teacher": "kd-hf-tester/bad--teacher"}))
    if named != "teacher":
        (quick_folder / "explanation_card.json").unlink()
    with pytest.raises(SystemExit) as stopped:
        main(["push", str(quick_folder), *ids])
    message = str(stopped.value.code)
    assert named in message and "\n" not in message and "is not a valid Hub repo id" in message
    assert hub_server.requests == []  # nothing was sent: no model pushed without its Space


def test_trainer_checks_hub_ids_before_creating_a_repo(
    hub_server, make_bert, text_dataset, distill_args, minilm_tokenizer
):
    args = distill_args(push_to_hub=True, hub_model_id=REPO, hub_space_id="kd-hf-tester/my demo")
    with pytest.raises(ValueError, match="hub_space_id"):
        DistillationTrainer(
            model=make_bert(seed=2), teacher_model=make_bert(seed=1), args=args, train_dataset=text_dataset[0],
            processing_class=minilm_tokenizer,
        )  # fmt: skip
    assert hub_server.requests == []


def test_a_second_push_removes_what_the_folder_no_longer_holds(hub_server, quick_folder):
    push_student(str(quick_folder), REPO, space_id=SPACE)
    api = HfApi()
    api.upload_file(path_or_fileobj=b"*.bin filter=lfs\n", path_in_repo=".gitattributes", repo_id=REPO)
    # A module that an older kd_hf had, pushed with the Space then.
    api.upload_file(path_or_fileobj=b"old = 1\n", path_in_repo="kd_hf/retired.py", repo_id=SPACE, repo_type="space")
    assert "explanations/000_student.png" in hub_server.files(REPO)

    (quick_folder / "explanations" / "000_student.png").unlink()
    push_student(str(quick_folder), REPO, space_id=SPACE)
    files = hub_server.files(REPO)
    assert "explanations/000_student.png" not in files and "explanations/000_teacher.png" in files
    assert ".gitattributes" in files  # the Hub's own file stays
    space = hub_server.files(SPACE, repo_type="space")
    assert "kd_hf/retired.py" not in space and "kd_hf/hub/push.py" in space  # the whole package, subpackages too


def test_push_refuses_a_folder_without_safetensors(tmp_path):
    with pytest.raises(SystemExit, match="no model saved as safetensors"):
        main(["push", str(tmp_path), "--repo-id", REPO])


def test_load_student_without_a_card_reads_the_task_from_the_config(tmp_path, make_vit):
    make_vit().save_pretrained(tmp_path / "vit")
    student = load_student(str(tmp_path / "vit"))
    assert student.card == {} and student.is_image_model
    assert student.processor.size["height"] == 8  # a default image processor for the config's image size
