"""Bad input fails before the first training step with one message that names the fix, and no step trains on NaN."""

import copy
import csv
import math
import os

import datasets
import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers import default_data_collator

from kd_hf import DistillationConfig, DistillationTrainer
from kd_hf.cli import main
from kd_hf.data import DistillationDataCollator, load_raw_datasets
from kd_hf.pairing import load_model
from tests.conftest import sentiment_rows


def _trainer(student, teacher, args, train, tokenizer, evaluation=None):
    return DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        data_collator=DistillationDataCollator(tokenizer),
    )


def _unlabelled(dataset):
    """The same examples with every label -100, as an unlabelled transfer set is often given."""
    dataset = dataset.cast_column("labels", datasets.Value("int64"))
    return dataset.map(lambda row: {"labels": -100})


def _write_csv(path, rows, header=("text", "label")):
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def _confident_teacher(teacher):
    """Sharper logits, so that the soft-label loss is far from 0 and a wrong weighting shows."""
    with torch.no_grad():
        teacher.classifier.weight.mul_(50)
    return teacher


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if a run gets as far as `Trainer.train`: the error must come at set-up."""

    def train(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(transformers.Trainer, "train", train)


# 10. Unlabelled examples train on the soft labels alone.


@pytest.mark.slow
def test_unlabelled_transfer_set_trains_on_soft_labels_without_nan(
    make_bert, text_dataset, distill_args, minilm_tokenizer
):
    student = make_bert(seed=2)
    before = copy.deepcopy(student.state_dict())
    train, evaluation = (_unlabelled(split) for split in text_dataset)
    trainer = _trainer(student, make_bert(seed=1), distill_args(max_steps=2), train, minilm_tokenizer, evaluation)

    trainer.train()
    metrics = trainer.evaluate()

    step_logs = [log for log in trainer.state.log_history if "loss" in log]
    assert len(step_logs) == 2
    assert all(math.isfinite(log["loss"]) and log["loss"] > 0 and log["soft_label_loss"] > 0 for log in step_logs)
    assert all("ce_loss" not in log for log in step_logs)  # no labelled example: nothing to report, not 0 or NaN
    assert all(torch.isfinite(p).all() for p in student.parameters())
    assert not torch.equal(before["classifier.weight"], student.state_dict()["classifier.weight"])
    assert math.isfinite(metrics["eval_loss"]) and 0 <= metrics["eval_teacher_agreement"] <= 1
    assert "eval_accuracy" not in metrics


def test_unlabelled_examples_weigh_only_in_the_distillation_term(
    make_bert, text_dataset, distill_args, minilm_tokenizer
):
    teacher, student = _confident_teacher(make_bert(seed=1)), make_bert(seed=2)
    trainer = _trainer(student, teacher, distill_args(alpha=0.4, temperature=1.0), text_dataset[0], minilm_tokenizer)
    batch = DistillationDataCollator(minilm_tokenizer)([text_dataset[0][i] for i in range(6)])
    batch["labels"][:4] = -100  # two labelled examples of six

    loss = trainer.compute_loss(student, batch)

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        s, t = student(**inputs).logits, teacher(**inputs).logits
    kl = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), reduction="none", log_target=True).sum(-1).mean()
    ce = F.cross_entropy(s[4:], batch["labels"][4:])
    assert loss.item() == pytest.approx((0.6 * kl + 0.4 * ce).item(), rel=1e-5)


def test_batch_without_labelled_examples_has_zero_hard_label_loss(
    make_bert, text_dataset, distill_args, minilm_tokenizer
):
    teacher, student = _confident_teacher(make_bert(seed=1)), make_bert(seed=2)
    trainer = _trainer(student, teacher, distill_args(alpha=0.5, temperature=1.0), text_dataset[0], minilm_tokenizer)
    batch = DistillationDataCollator(minilm_tokenizer)([text_dataset[0][i] for i in range(4)])
    batch["labels"][:] = -100

    # As Trainer passes it: the accumulated batch holds 4 examples, none of them labelled.
    loss = trainer.compute_loss(student, batch, num_items_in_batch=trainer._get_num_items_in_batch([batch], "cpu"))

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        s, t = student(**inputs).logits, teacher(**inputs).logits
    kl = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), reduction="none", log_target=True).sum(-1).mean()
    assert loss.item() == pytest.approx(0.5 * kl.item(), rel=1e-5)


def test_alpha_one_without_labels_fails_at_set_up(make_bert, text_dataset, distill_args, minilm_tokenizer):
    train = text_dataset[0].remove_columns("labels")
    with pytest.raises(ValueError, match="alpha.*no labels.*lower `alpha`"):
        _trainer(make_bert(seed=2), make_bert(seed=1), distill_args(alpha=1.0), train, minilm_tokenizer)


@pytest.fixture
def unlabelled_csvs(tmp_path):
    files = {}
    for split, n, seed in (("train", 32, 0), ("validation", 16, 1)):
        rows = sentiment_rows(n, seed)["text"]
        files[split] = _write_csv(tmp_path / f"unlabelled_{split}.csv", [(text,) for text in rows], header=("text",))
    return files


@pytest.mark.slow
def test_distill_learns_from_a_dataset_without_labels(tiny_text_project, tmp_path, unlabelled_csvs):
    from kd_hf import run
    from kd_hf.cli import parse_recipe

    recipe = tiny_text_project(data_files=unlabelled_csvs, model_init="config", save_strategy="no", max_steps=2)
    trainer = run.distill(parse_recipe([str(recipe)]))

    # The classes come from the teacher, whose labels the student's head takes.
    student = trainer.accelerator.unwrap_model(trainer.model)
    assert student.config.id2label == {0: "negative", 1: "positive"}
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert logs and all(math.isfinite(log["loss"]) and log["soft_label_loss"] > 0 for log in logs)
    assert (tmp_path / "student" / "model.safetensors").exists()


def test_train_without_labels_says_that_it_needs_them(tiny_text_project, tmp_path, unlabelled_csvs, no_training):
    recipe = tiny_text_project(
        "train.yaml", data_files=unlabelled_csvs, teacher_model_name_or_path=None, model_init="checkpoint",
        model_name_or_path=str(tmp_path / "teacher"), output_dir=str(tmp_path / "fine-tuned"),
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"label column 'label' not in the dataset.*`kd-hf train`.*`kd-hf distill`"):
        main(["train", str(recipe)])


# 11. A non-finite loss stops training at once.


@pytest.mark.slow
def test_non_finite_loss_stops_at_the_first_step_naming_the_part(
    make_bert, text_dataset, distill_args, minilm_tokenizer
):
    teacher, student = make_bert(seed=1), make_bert(seed=2)
    with torch.no_grad():
        teacher.classifier.bias.fill_(float("nan"))
    before = copy.deepcopy(student.state_dict())
    trainer = _trainer(student, teacher, distill_args(max_steps=2), text_dataset[0], minilm_tokenizer)

    with pytest.raises(FloatingPointError, match=r"step 1.*soft_label.*teacher's logits.*learning_rate.*fp16"):
        trainer.train()

    assert trainer.state.global_step == 0 and not any("loss" in log for log in trainer.state.log_history)
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())


@pytest.mark.slow
def test_non_finite_inputs_are_named(make_vit, distill_args):
    teacher, student = make_vit(seed=1), make_vit(seed=2)
    pixels = torch.randn(8, 1, 8, 8)
    pixels[3, 0, 2, 2] = float("inf")
    train = datasets.Dataset.from_dict({"pixel_values": pixels.tolist(), "labels": list(range(8))})
    args = distill_args(image_column="image", text_columns=[], max_steps=1)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=train, data_collator=default_data_collator
    )
    with pytest.raises(FloatingPointError, match=r"step 1.*`pixel_values`.*check the inputs"):
        trainer.train()


# 14. Late failures moved to set-up.


def test_unwritable_output_dir_fails_at_set_up(make_bert, text_dataset, distill_args, minilm_tokenizer, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    args = distill_args(output_dir=str(blocker / "run"), save_strategy="steps", save_steps=1)
    with pytest.raises(NotADirectoryError, match=r"`output_dir`.*a_file.*is a file"):
        _trainer(make_bert(seed=2), make_bert(seed=1), args, text_dataset[0], minilm_tokenizer)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_dir_fails_at_set_up(make_bert, text_dataset, distill_args, minilm_tokenizer, tmp_path):
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    args = distill_args(output_dir=str(folder), save_strategy="steps", save_steps=1)
    try:
        with pytest.raises(PermissionError, match=r"`output_dir`.*read_only.*not writable"):
            _trainer(make_bert(seed=2), make_bert(seed=1), args, text_dataset[0], minilm_tokenizer)
    finally:
        folder.chmod(0o755)


@pytest.mark.skipif(
    not os.path.isdir("/sys"), reason="needs Linux's /sys, where no user, root included, creates files"
)
def test_output_dir_where_even_root_cannot_write_fails_at_set_up(
    make_bert, text_dataset, distill_args, minilm_tokenizer
):
    # The read-only folder above cannot refuse root (CI runs as root); sysfs refuses everyone.
    args = distill_args(output_dir="/sys/kd_hf_run", save_strategy="steps", save_steps=1)
    with pytest.raises(PermissionError, match=r"`output_dir`.*/sys.*not writable"):
        _trainer(make_bert(seed=2), make_bert(seed=1), args, text_dataset[0], minilm_tokenizer)


def test_unwritable_output_dir_fails_before_kd_hf_train(tiny_text_project, tmp_path, no_training):
    (tmp_path / "a_file").write_text("not a folder")
    recipe = tiny_text_project(
        "train.yaml", teacher_model_name_or_path=None, model_init="checkpoint",
        model_name_or_path=str(tmp_path / "teacher"), output_dir=str(tmp_path / "a_file" / "run"),
    )  # fmt: skip
    with pytest.raises(NotADirectoryError, match="`output_dir`"):
        main(["train", str(recipe)])


@pytest.mark.parametrize("model_init", ["teacher_layers", "config"])
def test_max_length_beyond_the_position_embeddings_fails_at_set_up(
    tiny_text_project, tmp_path, model_init, no_training
):
    # The tiny teacher has 64 positions, and so has a student copied from its layers; one built here has 128.
    config = {"model_config": {"max_position_embeddings": 128}} if model_init == "config" else {}
    recipe = tiny_text_project(max_length=100, model_init=model_init, **config)
    role = "teacher" if model_init == "config" else "student"
    with pytest.raises(ValueError, match=rf"`max_length` 100.*{role}.*64 positions.*max_length: 64"):
        main(["distill", str(recipe)])


@pytest.mark.parametrize("labels", [["pos", "neg", "", "pos", "", "neg"], [1, 0, "", 1, "", 0]], ids=["str", "int"])
def test_empty_label_cells_fail_at_load_naming_the_column_and_count(tmp_path, labels):
    # A blank CSV cell reads as None in a string column and as NaN in a numeric one.
    path = _write_csv(tmp_path / "train.csv", [(f"review {i}", label) for i, label in enumerate(labels)])
    args = DistillationConfig(output_dir=str(tmp_path / "run"), report_to=[], data_files={"train": path})
    with pytest.raises(ValueError, match=r"label column 'label' has 2 empty rows of 6 in split 'train'.*filter"):
        load_raw_datasets(args)


def test_image_teacher_with_a_text_student_is_refused(make_bert, make_vit, distill_args):
    with pytest.raises(ValueError, match=r"teacher .*vit.* reads images .*student .*bert.* reads text"):
        DistillationTrainer(model=make_bert(labels=tuple("0123456789")), teacher_model=make_vit(), args=distill_args())


# 15. Corrupt weights.


def test_truncated_safetensors_names_the_file_and_the_fix(make_bert, tmp_path):
    make_bert().save_pretrained(tmp_path / "teacher")
    weights = tmp_path / "teacher" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(OSError, match=r"model\.safetensors.*corrupt or incomplete.*download.*train"):
        load_model(str(tmp_path / "teacher"))
