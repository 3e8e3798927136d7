"""The Gradio demo, launched on 127.0.0.1 with tiny students (teacher present and absent), called by gradio_client."""

import contextlib
import importlib.util
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from kd_hf.demo import Answer


TEXT = "a good and great film, fine cast"


def _bert(layers: int, seed: int, vocab_size: int = 30522):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, num_labels=2, id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )  # fmt: skip
    return BertForSequenceClassification(config).eval()


def _vit(layers: int, seed: int):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    labels = [str(d) for d in range(10)]
    config = ViTConfig(
        image_size=8, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=64, num_labels=10, id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )  # fmt: skip
    return ViTForImageClassification(config).eval()


def _save(folder, model, processor=None, card=None):
    model.save_pretrained(folder)
    if processor is not None:
        processor.save_pretrained(folder)
    if card is not None:
        (folder / "explanation_card.json").write_text(json.dumps(card))
    return str(folder)


def _digit(path, side=8):
    from PIL import Image

    pixels = np.zeros((side, side), dtype=np.uint8)
    pixels[side // 4 : -side // 4, side // 2 - 1 : side // 2 + 1] = 255  # a "1"
    Image.fromarray(pixels).save(path)
    return str(path)


@pytest.fixture(scope="module")
def text_models(tmp_path_factory, minilm_tokenizer, word_tokenizer):
    """A text student (MiniLM's tokenizer) whose card names a teacher with another tokenizer (whole words); and the
    same student with a card that names no teacher."""
    root = tmp_path_factory.mktemp("text")
    teacher = _save(root / "teacher", _bert(2, seed=1, vocab_size=len(word_tokenizer)), word_tokenizer)
    card = {"task": "text-classification", "labels": ["negative", "positive"], "examples": [{"text": TEXT}]}
    student = _save(root / "student", _bert(1, seed=0), minilm_tokenizer, {**card, "teacher": teacher})
    alone = _save(root / "alone", _bert(1, seed=0), minilm_tokenizer, card)
    return {"student": student, "alone": alone, "teacher": teacher}


@pytest.fixture(scope="module")
def image_models(tmp_path_factory):
    """A ViT student for 8x8 digits with an example image in its folder, and a ViT teacher named by its card."""
    root = tmp_path_factory.mktemp("image")
    teacher = _save(root / "teacher", _vit(2, seed=1))
    (root / "student" / "examples").mkdir(parents=True)
    _digit(root / "student" / "examples" / "000.png")
    card = {
        "task": "image-classification", "teacher": teacher, "labels": [str(d) for d in range(10)],
        "examples": [{"image": "examples/000.png"}, {"image": "../../../etc/passwd"}],
    }  # fmt: skip
    return {"student": _save(root / "student", _vit(1, seed=0), card=card), "teacher": teacher}


@contextlib.contextmanager
def running(student: str, teacher: str | None = None):
    """The demo on 127.0.0.1 and a free port, with a `gradio_client.Client` connected to it."""
    from gradio_client import Client

    from kd_hf.demo import launch_demo

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo = launch_demo(
        student, teacher, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True
    )
    try:
        yield Client(demo.local_url, verbose=False)
    finally:
        demo.close()


@pytest.fixture(scope="module")
def text_app(text_models):
    with running(text_models["student"]) as client:
        yield client


@pytest.fixture(scope="module")
def image_app(image_models):
    with running(image_models["student"]) as client:
        yield client


def _check_label(label: dict, labels: set[str], shown: int | None = None):
    """A `gr.Label` value: the top class and the top `shown` (default: all) classes' probabilities, sorted."""
    confidences = [row["confidence"] for row in label["confidences"]]
    assert {row["label"] for row in label["confidences"]} <= labels and label["label"] in labels
    assert len(confidences) == (shown or len(labels)) and confidences == sorted(confidences, reverse=True)
    assert sum(confidences) == pytest.approx(1, abs=1e-4) if shown is None else sum(confidences) <= 1 + 1e-4


def _figures(table: dict, roles: list[str]) -> dict[str, dict]:
    """The figures table (`gr.Dataframe`): a row per metric, a column per model; rows by metric name."""
    assert table["headers"] == ["metric", *roles]
    return {row[0]: dict(zip(roles, row[1:])) for row in table["data"]}


def _check_figures(table: dict, roles: list[str], features: str) -> dict[str, dict]:
    """The table's rows: latency, explanation time and deletion AUC per model, and with a teacher the student's
    agreement with it (Spearman ρ, top-k overlap over `features`, e.g. "7 words")."""
    rows = _figures(table, roles)
    per_model = ["latency, ms (one forward pass)", "explanation time, ms", "deletion AUC (lower: more faithful)"]
    agreement = ["Spearman ρ with the teacher"] + [name for name in rows if name.endswith("overlap with the teacher")]
    assert list(rows) == per_model + (agreement if "teacher" in roles else [])
    for name in per_model:
        assert all(isinstance(rows[name][role], float) for role in roles)
        assert all(rows[name][role] > 0 for role in roles) or name.startswith("deletion")
        assert all(0 <= rows[name][role] <= 1 for role in roles) or not name.startswith("deletion")
    if "teacher" in roles:
        [overlap] = agreement[1:]
        assert f" of {features}" in overlap and overlap.startswith("top-")
        assert rows[agreement[0]]["teacher"] is None and -1 <= rows[agreement[0]]["student"] <= 1
        assert rows[overlap]["teacher"] is None and 0 <= rows[overlap]["student"] <= 1
    return rows


def _check_deletion(plot: dict, models: set[str]):
    rows = [dict(zip(plot["columns"], row)) for row in plot["data"]]
    assert {row["model"] for row in rows} == models
    for model in models:
        curve = [row for row in rows if row["model"] == model]
        assert len(curve) == 11 and curve[0]["fraction removed"] == 0 and curve[-1]["fraction removed"] == 1
        assert all(0 <= row["probability"] <= 1 for row in curve)


@pytest.mark.parametrize("method", ["input_x_gradient", "integrated_gradients"])
def test_text_demo_returns_both_models_predictions_word_attributions_and_agreement(text_app, method):
    answered = text_app.predict(TEXT, method, 8, api_name="/explain_text")
    assert len(answered) == len(Answer._fields)  # the endpoint returns `Answer`'s fields, in order
    answer = Answer(*answered)
    assert "Explained class" in answer.message and "Spearman" in answer.message
    assert ("integrated gradients" if method == "integrated_gradients" else "input × gradient") in answer.message
    _check_label(answer.teacher_label, {"negative", "positive"})
    _check_label(answer.student_label, {"negative", "positive"})
    words = TEXT.split()
    for highlights in (answer.teacher, answer.student):
        scored = [(row["token"], row["class_or_confidence"]) for row in highlights if row["token"].strip()]
        # the same whitespace words on both sides, though the two tokenizers split "film," differently
        assert [word for word, _ in scored] == words
        scores = np.array([score for _, score in scored])
        assert np.all(np.abs(scores) <= 1) and np.abs(scores).max() == pytest.approx(1)
    assert f"Explained class: **{answer.teacher_label['label']}**" in answer.message
    rows = _check_figures(answer.figures, ["teacher", "student"], f"{len(words)} words")
    assert f"Spearman ρ {rows['Spearman ρ with the teacher']['student']:.2f}" in answer.message
    _check_deletion(answer.deletion, {"teacher", "student"})


@pytest.mark.parametrize(
    ("text", "method", "expected"),
    [
        ("   ", "input_x_gradient", "Type or paste some text"),
        (" ".join(["good"] * 200), "input_x_gradient", "tokens"),
        ("x" * 5000, "input_x_gradient", "characters"),
        (TEXT, "grad_cam", "Unknown method"),
    ],
)
def test_text_demo_answers_bad_input_with_a_message(text_app, text, method, expected):
    answer = Answer(*text_app.predict(text, method, 8, api_name="/explain_text"))
    assert answer.message.startswith("⚠️") and expected in answer.message
    assert answer.teacher_label == answer.student_label == {}  # every output cleared
    assert answer.figures["data"] == [] and answer.deletion is None


def test_text_demo_bounds_integrated_gradients_steps(text_app):
    from kd_hf.demo import MAX_STEPS

    answer = Answer(*text_app.predict(TEXT, "integrated_gradients", MAX_STEPS + 1, api_name="/explain_text"))
    assert answer.message.startswith("⚠️") and f"1 to {MAX_STEPS} steps" in answer.message


def test_text_demo_without_teacher_shows_the_student_alone(text_models):
    with running(text_models["alone"]) as client:
        assert "No teacher is named in the student's card, so only the student is shown." in client.predict(
            api_name="/status"
        )
        answer = Answer(*client.predict(TEXT, "input_x_gradient", 8, api_name="/explain_text"))
    assert answer.teacher_label == {} and answer.teacher is None
    _check_label(answer.student_label, {"negative", "positive"})
    assert len([row for row in answer.student if row["token"].strip()]) == len(TEXT.split())
    _check_figures(answer.figures, ["student"], "")  # no teacher column, no agreement rows
    assert (
        f"Explained class: **{answer.student_label['label']}**" in answer.message and "Spearman" not in answer.message
    )
    _check_deletion(answer.deletion, {"student"})


def test_image_demo_returns_predictions_heatmaps_and_agreement(image_app, tmp_path):
    from gradio_client import handle_file
    from PIL import Image

    from kd_hf.demo import DISPLAY_SIDE

    message, teacher, student, teacher_map, student_map, figures, deletion = image_app.predict(
        handle_file(_digit(tmp_path / "digit.png", side=28)), "input_x_gradient", 8, api_name="/explain_image"
    )
    assert "Spearman" in message
    digits = {str(d) for d in range(10)}
    _check_label(teacher, digits, shown=5)  # the top five of ten classes
    _check_label(student, digits, shown=5)
    for overlay in (teacher_map, student_map):
        with Image.open(overlay) as image:
            assert image.size == (DISPLAY_SIDE, DISPLAY_SIDE) and image.mode == "RGB"
    _check_figures(figures, ["teacher", "student"], "4 cells (2×2)")  # the student's 2x2 patch grid
    _check_deletion(deletion, {"teacher", "student"})


def test_image_demo_answers_unreadable_or_huge_images_with_a_message(image_app, tmp_path):
    from gradio_client import handle_file
    from PIL import Image

    not_an_image = tmp_path / "photo.png"
    not_an_image.write_text("this is not a PNG")
    answer = Answer(*image_app.predict(handle_file(str(not_an_image)), "saliency", 8, api_name="/explain_image"))
    assert answer.message.startswith("⚠️") and "could not be read as an image" in answer.message

    Image.new("L", (6000, 5000)).save(tmp_path / "huge.png")  # 30 megapixels of black: a small file
    answer = Answer(
        *image_app.predict(handle_file(str(tmp_path / "huge.png")), "saliency", 8, api_name="/explain_image")
    )
    assert answer.message.startswith("⚠️") and "megapixels" in answer.message

    Image.new("L", (1500, 1200), 128).save(tmp_path / "large.png")
    answer = Answer(
        *image_app.predict(handle_file(str(tmp_path / "large.png")), "saliency", 8, api_name="/explain_image")
    )
    assert "shrunk to 1024" in answer.message and answer.student_label["label"]


def _raw_call(client, payload) -> str:
    """`/explain_image` called over plain HTTP with `payload` as the image (gradio_client would upload a local file
    that carries the file marker): the raw event stream that comes back."""
    import httpx

    url = client.src.rstrip("/") + "/gradio_api/call/explain_image"
    event = httpx.post(url, json={"data": [payload, "saliency", 8]}).json()["event_id"]
    return httpx.get(f"{url}/{event}", timeout=30).text


def test_image_demo_reads_only_uploaded_files_and_says_the_same_of_any_other_path(image_app, tmp_path):
    from gradio_client import handle_file

    existing = _digit(tmp_path / "secret.png")  # an image on the server, never uploaded
    answers = [
        Answer(*image_app.predict({"path": path}, "saliency", 8, api_name="/explain_image"))
        for path in (existing, str(tmp_path / "missing.png"), str(tmp_path))
    ]
    messages = {answer.message for answer in answers}
    assert len(messages) == 1  # nothing tells an existing path from a missing one
    [message] = messages
    assert all(answer.figures["data"] == [] for answer in answers)
    assert message.startswith("⚠️") and "uploaded" in message and "Explained class" not in message
    assert all(answer.student_label == {} and answer.student is None for answer in answers)  # no prediction, overlay
    # With gradio's file marker, gradio itself refuses a path it did not receive as an upload.
    marked = [_raw_call(image_app, {"path": p, "meta": {"_type": "gradio.FileData"}}) for p in (existing, "/nope.png")]
    assert all("event: error" in raw and "Explained class" not in raw for raw in marked)
    # An upload of the same file is explained.
    answer = Answer(*image_app.predict(handle_file(existing), "saliency", 8, api_name="/explain_image"))
    assert "Explained class" in answer.message


def test_image_demo_never_opens_a_fifo(image_app, tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    try:
        job = image_app.submit({"path": str(fifo)}, "saliency", 8, api_name="/explain_image")
        answer = Answer(*job.result(timeout=20))
    finally:  # a reader blocked on the FIFO (the bug) gets end-of-file and frees the demo's only worker
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    missing = Answer(
        *image_app.predict({"path": str(tmp_path / "missing.png")}, "saliency", 8, api_name="/explain_image")
    )
    assert answer.message == missing.message and answer.message.startswith("⚠️") and answer.figures["data"] == []


def test_image_demo_with_unloadable_teacher_runs_the_student_alone(image_models, tmp_path):
    from gradio_client import handle_file

    with running(image_models["student"], teacher=str(tmp_path / "no-such-teacher")) as client:
        status = client.predict(api_name="/status")
        answer = Answer(
            *client.predict(
                handle_file(_digit(tmp_path / "digit.png")), "integrated_gradients", 4, api_name="/explain_image"
            )
        )
    assert "Teacher `no-such-teacher` is not available here" in status and str(tmp_path) not in status
    assert answer.teacher_label == {} and answer.teacher is None and answer.student is not None
    _check_figures(answer.figures, ["student"], "")


def _components(demo, kind):
    import gradio as gr

    return [block for block in demo.blocks.values() if type(block) is getattr(gr, kind)]


def test_demo_defaults_to_integrated_gradients_and_shows_its_steps_only_for_it(text_models):
    from kd_hf.demo import build_demo, show_steps

    demo = build_demo(text_models["student"])
    [method], [steps] = _components(demo, "Radio"), _components(demo, "Slider")
    assert method.value == "integrated_gradients" and steps.visible
    assert method.choices[0] == ("integrated gradients", "integrated_gradients")
    # the method's change event updates the slider, through `show_steps`
    [toggle] = [fn for fn in demo.fns.values() if fn.fn is show_steps]
    assert [(target, event) for target, event in toggle.targets] == [(method._id, "change")]
    assert [block._id for block in toggle.outputs] == [steps._id] and [block._id for block in toggle.inputs] == [
        method._id
    ]
    assert show_steps("integrated_gradients").visible is True
    assert show_steps("input_x_gradient").visible is False and show_steps("saliency").visible is False


def test_demo_figures_are_a_table(text_models):
    import gradio as gr

    from kd_hf.demo import build_demo

    [figures] = _components(build_demo(text_models["student"]), "Dataframe")
    assert figures.headers == ["metric", "teacher", "student"] and not figures.interactive
    assert not _components(build_demo(text_models["student"]), "JSON")
    [alone] = _components(build_demo(text_models["alone"]), "Dataframe")
    assert alone.headers == ["metric", "student"] and isinstance(alone, gr.Dataframe)


def _explain(demo, *inputs):
    [endpoint] = [fn for fn in demo.fns.values() if fn.api_name in ("explain_text", "explain_image")]
    return endpoint.fn(*inputs)


@pytest.mark.parametrize(
    ("teacher", "hub", "reason"),
    [
        ("{tmp_path}/gone/minilm-teacher", None, "no model folder of that name is on this machine"),
        ("me/no-such-teacher", None, "the Hub cannot be reached from here"),  # HF_HUB_OFFLINE=1
        ("me/no-such-teacher", "hub_server", "the Hub has no public model of that name"),  # a 404
        ("me/no-such-teacher", "dead_endpoint", "the Hub cannot be reached from here"),
    ],
)
def test_a_card_naming_a_missing_teacher_shows_a_plain_note_and_no_server_path(
    tmp_path, minilm_tokenizer, request, teacher, hub, reason
):
    from kd_hf.demo import build_demo

    if hub is not None:
        request.getfixturevalue(hub)
    teacher = teacher.format(tmp_path=tmp_path)
    card = {"task": "text-classification", "labels": ["negative", "positive"], "examples": [{"text": TEXT}]}
    student = _save(tmp_path / "minilm-student", _bert(1, seed=0), minilm_tokenizer, {**card, "teacher": teacher})
    demo = build_demo(student)
    header = _components(demo, "Markdown")[0].value
    shown = "minilm-teacher" if teacher.startswith("/") else teacher
    assert f"Teacher `{shown}` is not available here ({reason}), so only the student is shown." in header
    assert "**Student:** `minilm-student`" in header
    answer = _explain(demo, TEXT, "integrated_gradients", 8)
    assert "Explained class" in answer.message and answer.teacher_label is None  # the student alone
    page = header + repr(answer)
    assert (
        str(tmp_path) not in page
        and "/tmp" not in page
        and not any(advice in page.lower() for advice in ("hf auth login", "token", "traceback", "huggingface.co"))
    )


def test_demo_shows_a_local_student_by_its_folder_name_only(tmp_path, image_models):
    from kd_hf.demo import _shown_name

    assert _shown_name(image_models["student"]) == "student"
    assert _shown_name(str(tmp_path / "nowhere" / "student")) == "student"
    assert _shown_name("../outputs/student") == "student" and _shown_name("a/b/student") == "student"
    assert _shown_name("me/student") == "me/student" and _shown_name("distilbert-base-uncased") == (
        "distilbert-base-uncased"
    )


def test_image_overlay_uses_the_cards_colour_scale():
    from kd_hf.demo import DISPLAY_SIDE, OVERLAY_OPACITY, _overlay
    from kd_hf.explain.explanation import NEGATIVE_RGB, POSITIVE_RGB

    overlay = _overlay(torch.zeros(1, 2, 2), np.array([[1.0, -1.0], [0.0, 0.5]]))  # black pixels
    assert overlay.shape == (DISPLAY_SIDE, DISPLAY_SIDE, 3)
    corners = overlay[0, 0], overlay[0, -1], overlay[-1, 0], overlay[-1, -1]
    expected = [OVERLAY_OPACITY * np.array(POSITIVE_RGB), OVERLAY_OPACITY * np.array(NEGATIVE_RGB), np.zeros(3)]
    expected.append(0.5 * OVERLAY_OPACITY * np.array(POSITIVE_RGB))
    for corner, colour in zip(corners, expected):
        np.testing.assert_allclose(corner, colour, atol=1)


def test_demo_reads_card_examples_only_from_the_students_folder(image_models):
    from kd_hf.demo import _examples

    card = json.loads(open(f"{image_models['student']}/explanation_card.json").read())
    examples = _examples(image_models["student"], card, image=True)
    assert len(examples) == 1 and examples[0].size == (8, 8)  # "../../../etc/passwd" was refused


def test_demo_of_a_student_that_does_not_load_says_why(tmp_path):
    with running(str(tmp_path / "missing-student")) as client:
        status = client.predict(api_name="/status")
    assert status == (
        "⚠️ The student `missing-student` is not available here (no model folder of that name is on this machine); "
        "the server's log has the details."
    )


SPACE = Path(__file__).resolve().parent.parent / "space"


def _space_app():
    spec = importlib.util.spec_from_file_location("kd_hf_space_app", SPACE / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_space_app_launches_the_student_named_by_its_environment_or_readme(tmp_path, monkeypatch):
    import kd_hf.demo

    app = _space_app()
    readme = tmp_path / "README.md"
    readme.write_text("---\ntitle: demo\nsdk: gradio\nmodels:\n- me/student\n- me/teacher\n---\n\n# demo\n")
    assert app.student_from_readme(readme) == "me/student"
    assert app.student_from_readme(SPACE / "README.md") is None  # the template names no model yet

    launched = []
    monkeypatch.setattr(kd_hf.demo, "launch_demo", lambda *args, **kwargs: launched.append(args))
    monkeypatch.setenv("KD_HF_STUDENT", "me/other-student")
    monkeypatch.setenv("KD_HF_TEACHER", "me/other-teacher")
    app.main()
    assert launched == [("me/other-student", "me/other-teacher")]
    monkeypatch.delenv("KD_HF_STUDENT")
    with pytest.raises(SystemExit, match="KD_HF_STUDENT"):
        app.main()


def test_space_readme_and_requirements_match_what_the_tests_ran_with():
    from importlib.metadata import version

    import yaml

    front = yaml.safe_load((SPACE / "README.md").read_text().split("---")[1])
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py" and front["models"] == []
    assert front["sdk_version"] == version("gradio")
    pins = dict(line.split("==") for line in (SPACE / "requirements.txt").read_text().splitlines() if "==" in line)
    runtime = {"torch", "transformers", "safetensors", "huggingface_hub", "accelerate", "datasets", "captum", "scipy"}
    runtime |= {"scikit-learn", "matplotlib", "pandas", "pillow", "pyyaml", "evaluate"}
    assert runtime <= set(pins)
    for name, pinned in pins.items():
        assert pinned.split("+")[0] == version(name).split("+")[0], name


def test_cli_demo_launches_the_app(monkeypatch):
    import kd_hf.demo
    from kd_hf.cli import main

    launched = []
    monkeypatch.setattr(kd_hf.demo, "launch_demo", lambda *args, **kwargs: launched.append((args, kwargs)))
    main(["demo", "me/student", "--teacher", "me/teacher", "--port", "7999"])
    assert launched == [
        (("me/student", "me/teacher"), {"server_name": "127.0.0.1", "server_port": 7999, "share": False})
    ]
