"""Several teachers at once: soft labels combined, label spaces aligned, cached like one teacher, listed in the card."""

import json

import pytest
import torch

from kd_hf import DistillationTrainer
from kd_hf.cli import main
from kd_hf.ensemble import EnsembleTeacher


def batch(tokenizer):
    return dict(tokenizer(["a great film", "a dull and boring cast"], return_tensors="pt", padding=True))


def test_two_teachers_with_differently_ordered_labels_combine_correctly(make_bert, minilm_tokenizer):
    first = make_bert(labels=("negative", "positive"), seed=1)
    second = make_bert(labels=("POSITIVE", "Negative"), seed=2)  # the same classes, the other way round
    inputs = batch(minilm_tokenizer)
    with torch.no_grad():
        a, b = first(**inputs).logits, second(**inputs).logits[:, [1, 0]]  # by hand, in the first's order
        temperature = 2.0
        ensemble = EnsembleTeacher([first, second], [3, 1], "probabilities", temperature)
        expected = 0.75 * (a / temperature).softmax(-1) + 0.25 * (b / temperature).softmax(-1)
        torch.testing.assert_close((ensemble(**inputs).logits / temperature).softmax(-1), expected)

        mean_logits = EnsembleTeacher([first, second], [3, 1], "logits")(**inputs).logits
        torch.testing.assert_close(mean_logits, 0.75 * a + 0.25 * b)
    assert ensemble.config.id2label == first.config.id2label


def test_an_ensemble_of_one_teacher_twice_is_that_teacher(make_bert, minilm_tokenizer):
    teacher = make_bert(seed=1)
    inputs = batch(minilm_tokenizer)
    with torch.no_grad():
        alone = teacher(**inputs).logits
        twice = EnsembleTeacher([teacher, teacher], temperature=2.0)(**inputs).logits
    torch.testing.assert_close(twice.softmax(-1), alone.softmax(-1), atol=1e-6, rtol=1e-5)


def test_teachers_with_other_labels_or_bad_weights_are_refused(make_bert):
    with pytest.raises(ValueError, match="label_mapping"):
        EnsembleTeacher([make_bert(labels=("a", "b")), make_bert(labels=("a", "c"))])
    with pytest.raises(ValueError, match="one non-negative weight per teacher"):
        EnsembleTeacher([make_bert(), make_bert()], weights=[1.0])


def test_internal_losses_are_refused_with_several_teachers(make_bert, distill_args, text_dataset):
    args = distill_args(loss_type=["soft_label", "hidden_state"], layer_map="uniform")
    with pytest.raises(ValueError, match="logit losses"):
        DistillationTrainer(
            model=make_bert(layers=1), teacher_model=[make_bert(seed=1), make_bert(seed=2)], args=args,
            train_dataset=text_dataset[0],
        )  # fmt: skip


@pytest.mark.slow
def test_the_teacher_cache_covers_the_ensemble(make_bert, distill_args, text_dataset, minilm_tokenizer):
    train, evaluation = text_dataset
    teachers = [make_bert(seed=1), make_bert(seed=2)]
    trainer = DistillationTrainer(
        model=make_bert(layers=1), teacher_model=teachers, args=distill_args(teacher_cache=True),
        train_dataset=train, eval_dataset=evaluation, processing_class=minilm_tokenizer,
    )  # fmt: skip
    cached = torch.tensor(trainer.train_dataset[:4]["teacher_logits"])
    inputs = {k: torch.as_tensor(v) for k, v in train[:4].items() if k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        expected = EnsembleTeacher(teachers, temperature=trainer.args.temperature)(**inputs).logits
    torch.testing.assert_close(cached, expected, atol=1e-5, rtol=1e-5)
    # Another weighting is another teacher: the cache is recomputed, not reused.
    other = DistillationTrainer(
        model=make_bert(layers=1), teacher_model=teachers,
        args=distill_args(teacher_cache=True, teacher_weights=[1.0, 0.0]), train_dataset=train,
        processing_class=minilm_tokenizer,
    )  # fmt: skip
    assert other.train_dataset._fingerprint != trainer.train_dataset._fingerprint
    trainer.train()


@pytest.mark.slow
def test_a_recipe_with_two_teachers_trains_and_lists_both_in_the_card(
    tiny_text_project, tmp_path, make_bert, minilm_tokenizer
):
    make_bert(layers=2, seed=3, labels=("positive", "negative")).save_pretrained(tmp_path / "teacher2")
    minilm_tokenizer.save_pretrained(tmp_path / "teacher2")
    recipe = tiny_text_project(
        teacher_model_name_or_path=None, teachers=[str(tmp_path / "teacher"), str(tmp_path / "teacher2")],
        teacher_weights=[0.5, 0.5], model_init="config", model_config={"num_hidden_layers": 1},
    )  # fmt: skip
    main(["distill", str(recipe)])
    folder = tmp_path / "student"
    facts = json.loads((folder / "explanation_card.json").read_text())
    assert facts["teachers"] == [str(tmp_path / "teacher"), str(tmp_path / "teacher2")]
    card = (folder / "README.md").read_text()
    assert "distilled from 2 teachers at once" in card and "teacher2" in card
    results = json.loads((folder / "eval_results.json").read_text())
    assert " + " in results["teacher"]["name_or_path"] and 0 <= results["student"]["top1_agreement"] <= 1
