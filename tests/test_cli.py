import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from kd_hf.cli import main


@pytest.mark.slow
def test_train_then_distill_leaves_a_student_that_plain_transformers_loads(tiny_text_project, tmp_path):
    # `kd-hf train`: fine-tune a teacher on the CSV (no distillation).
    train_recipe = tiny_text_project(
        "train.yaml",
        teacher_model_name_or_path=None,
        model_init="checkpoint",
        model_name_or_path=str(tmp_path / "teacher"),
        output_dir=str(tmp_path / "fine-tuned"),
    )
    main(["train", str(train_recipe)])
    assert json.loads((tmp_path / "fine-tuned" / "eval_results.json").read_text())["eval_accuracy"] >= 0

    # `kd-hf distill` from the fine-tuned teacher into a 1-layer student copied from its second layer.
    main(["distill", str(tiny_text_project(teacher_model_name_or_path=str(tmp_path / "fine-tuned")))])

    folder = tmp_path / "student"
    assert (folder / "model.safetensors").exists() and not list(folder.glob("pytorch_model*.bin"))
    logged = json.loads((folder / "all_results.json").read_text())  # Trainer's own evaluation
    assert {"eval_accuracy", "eval_teacher_agreement", "eval_soft_label_loss", "eval_ce_loss"} <= set(logged)
    results = json.loads((folder / "eval_results.json").read_text())  # kd_hf's report, teacher vs student
    assert results["student"]["accuracy"] == pytest.approx(logged["eval_accuracy"])
    student = AutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert student.config.num_hidden_layers == 1
    assert student.config.id2label == {0: "negative", 1: "positive"}
    with torch.no_grad():
        logits = student(**tokenizer(["a great film"], return_tensors="pt")).logits
    assert logits.shape == (1, 2)


@pytest.mark.slow
def test_interrupted_run_resumes_from_its_last_checkpoint(tiny_text_project, tmp_path, caplog):
    recipe = tiny_text_project(max_steps=2)
    main(["distill", str(recipe)])
    assert (tmp_path / "student" / "checkpoint-2").is_dir()

    with caplog.at_level("INFO", logger="kd_hf"):
        main(["distill", str(recipe), "--max_steps", "4"])
    assert "Resuming from" in caplog.text and "checkpoint-2" in caplog.text
    state = json.loads((tmp_path / "student" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"text_columns": ["review"]}, ValueError, "review.*text_columns"),
        ({"label_column": "stars"}, ValueError, "stars.*label_column"),
        ({"teacher_model_name_or_path": "/no/such/teacher"}, FileNotFoundError, "does not exist"),
        ({"loss_type": ["soft_label", "attention_please"]}, ValueError, "Unknown loss"),
        ({"temperature": 0}, ValueError, "temperature"),
        ({"model_init": "checkpoint"}, ValueError, "needs `model_name_or_path`"),
    ],
)
def test_bad_recipes_fail_before_any_training_step(tiny_text_project, tmp_path, fields, error, message):
    with pytest.raises(error, match=message):
        main(["distill", str(tiny_text_project(**fields))])
    assert not (tmp_path / "student").exists()


def test_mismatched_teacher_labels_fail_before_training(tiny_text_project, tmp_path, make_bert, minilm_tokenizer):
    teacher = make_bert(labels=("cat", "dog"))
    teacher.save_pretrained(tmp_path / "pets")
    minilm_tokenizer.save_pretrained(tmp_path / "pets")
    recipe = tiny_text_project(teacher_model_name_or_path=str(tmp_path / "pets"), model_init="config")
    with pytest.raises(ValueError, match=r"\['cat', 'dog'\].*\['negative', 'positive'\]"):
        main(["distill", str(recipe)])
    assert not (tmp_path / "student").exists()


def test_unknown_command_prints_usage():
    with pytest.raises(SystemExit, match="kd-hf distill"):
        main(["distil"])


@pytest.mark.slow
def test_students_built_from_a_config_start_from_the_recipe_seed(tiny_text_project, tmp_path):
    from safetensors.torch import load_file

    from kd_hf import run
    from kd_hf.cli import parse_recipe

    def first_weights(seed, name):
        recipe = tiny_text_project(f"{name}.yaml", model_init="config", max_steps=1, seed=seed,
                                   output_dir=str(tmp_path / name), save_strategy="no")  # fmt: skip
        torch.manual_seed(ord(name))  # a different global state for every run: the recipe's seed must decide
        run.distill(parse_recipe([str(recipe)]))
        return load_file(tmp_path / name / "model.safetensors")["classifier.weight"]

    assert torch.equal(first_weights(1, "a"), first_weights(1, "b"))
    assert not torch.equal(first_weights(1, "c"), first_weights(2, "d"))


@pytest.mark.slow
def test_bf16_training_reports_the_student_and_teacher_as_they_are_saved(tiny_text_project, tmp_path, monkeypatch):
    # Trained under bf16 autocast with a bf16 teacher, as `bf16: true` and `teacher_dtype: bfloat16` make it: the
    # report and the card still judge what a user loads, the fp32 student without the autocast wrapper and the teacher
    # in its own precision.
    import kd_hf.run

    seen = {}
    evaluate_student = kd_hf.run.evaluate_student

    def spy(student, teacher, **kwargs):
        seen.update(student=student, teacher=teacher)
        return evaluate_student(student, teacher, **kwargs)

    monkeypatch.setattr(kd_hf.run, "evaluate_student", spy)
    main(["distill", str(tiny_text_project(bf16=True, teacher_dtype="bfloat16", model_init="config"))])

    student, teacher = seen["student"], seen["teacher"]
    assert student.dtype == torch.float32 and teacher.dtype == torch.float32
    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student").eval()
    inputs = {"input_ids": torch.tensor([[101, 2307, 2143, 1012, 102]])}
    with torch.no_grad():
        assert torch.equal(student(**inputs).logits, saved(**inputs).logits)  # not rounded through bf16
