import copy

import pytest
import torch
from safetensors.torch import load_file

from kd_hf import DistillationTrainer
from kd_hf.data import DistillationDataCollator
from kd_hf.losses.attention import AttentionLoss
from kd_hf.losses.hidden_state import HiddenStateLoss
from kd_hf.losses.layers import layer_pairs
from kd_hf.trainer import LOSS_STATE_NAME


def _outputs(model, inputs, grad=False):
    model.set_attn_implementation("eager")
    with torch.set_grad_enabled(grad):
        return model(**inputs, output_attentions=True, output_hidden_states=True)


def _inputs(tokenizer, texts=("a great and moving film", "dull"), pad_to=None):
    padding = "max_length" if pad_to else True
    return dict(tokenizer(list(texts), padding=padding, max_length=pad_to, return_tensors="pt"))


def _relation_outputs(model, inputs, grad=False):
    """Outputs with the q/k/v projections recorded as the trainer does for `attention_heads: relation`."""
    from kd_hf.losses.attention import QKVRecorder

    recorder = QKVRecorder(model)
    outputs = _outputs(model, inputs, grad)
    outputs.qkv = recorder.pop()
    return outputs


LOSSES = [
    ("attention", {"attention_loss": "kl"}),
    ("attention", {"attention_loss": "mse"}),
    ("attention", {"attention_heads": "relation"}),
    ("hidden_state", {"hidden_state_loss": "mse"}),
    ("hidden_state", {"hidden_state_loss": "cosine", "hidden_state_embeddings": True}),
]


def _build(name, args, student, teacher):
    return (AttentionLoss if name == "attention" else HiddenStateLoss)(args, student.config, teacher.config)


def _forward(loss, model, inputs, grad=False):
    relation = getattr(loss, "heads", None) == "relation"
    return (_relation_outputs if relation else _outputs)(model, inputs, grad)


@pytest.mark.parametrize(
    ("student", "teacher", "spec", "expected"),
    [
        (4, 12, "uniform", [(1, 3), (2, 6), (3, 9), (4, 12)]),
        (2, 6, "uniform", [(1, 3), (2, 6)]),
        (2, 6, "last", [(2, 6)]),
        (2, 6, [1, 4], [(1, 1), (2, 4)]),
    ],
)
def test_layer_map_pairs_student_and_teacher_layers(student, teacher, spec, expected):
    assert layer_pairs(student, teacher, spec) == expected


def test_layer_map_rejects_impossible_maps():
    with pytest.raises(ValueError, match="multiple"):
        layer_pairs(4, 6)
    with pytest.raises(ValueError, match="one teacher layer"):
        layer_pairs(2, 6, [1, 7])


@pytest.mark.parametrize(("name", "options"), LOSSES)
def test_loss_is_zero_for_a_copy_of_the_teacher(name, options, make_bert, minilm_tokenizer, distill_args):
    teacher = make_bert(layers=2, seed=1)
    student = copy.deepcopy(teacher)
    loss = _build(name, distill_args(loss_type=[name], **options), student, teacher)
    inputs = _inputs(minilm_tokenizer)
    value = loss(_forward(loss, student, inputs), _forward(loss, teacher, inputs), inputs, None)
    assert value.shape == (2,)
    assert torch.allclose(value, torch.zeros(2), atol=1e-6)


@pytest.mark.parametrize(("name", "options"), LOSSES)
def test_loss_is_positive_and_trains_the_student(name, options, make_bert, minilm_tokenizer, distill_args):
    teacher, student = make_bert(layers=4, seed=1, heads=4), make_bert(layers=2, seed=2, heads=2, hidden=16)
    args = distill_args(loss_type=[name], **{"attention_heads": "average", **options})
    loss = _build(name, args, student, teacher)
    inputs = _inputs(minilm_tokenizer)

    value = loss(_forward(loss, student, inputs, grad=True), _forward(loss, teacher, inputs), inputs, None)
    value.sum().backward()

    assert torch.isfinite(value).all() and (value > 0).all()
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    if name == "hidden_state":  # 16 -> 32: learned projections, which train too
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.projections.parameters())


@pytest.mark.parametrize(("name", "options"), LOSSES)
def test_the_trainer_keeps_intermediate_losses_from_training_the_teacher(
    name, options, make_bert, minilm_tokenizer, distill_args
):
    # The losses compare the teacher's attention maps and hidden states as they come, without detaching them: the
    # trainer runs the teacher under `no_grad`. The teacher here requires grad again after set-up, so a trainer that
    # ran it with gradients on would leave gradients in its weights.
    teacher, student = make_bert(layers=4, seed=1, heads=4), make_bert(layers=2, seed=2, heads=2, hidden=16)
    args = distill_args(loss_type=["soft_label", name], **{"attention_heads": "average", **options})
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args)
    teacher.requires_grad_(True)
    batch = {**_inputs(minilm_tokenizer), "labels": torch.tensor([1, 0])}

    trainer.model.train()
    trainer.compute_loss(trainer.model, batch).backward()

    assert trainer._metrics["train"][f"{name}_loss"][-1] > 0
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize(("name", "options"), LOSSES)
def test_padding_does_not_change_the_loss(name, options, make_bert, minilm_tokenizer, distill_args):
    teacher, student = make_bert(layers=2, seed=1), make_bert(layers=2, seed=2)
    loss = _build(name, distill_args(loss_type=[name], **options), student, teacher)
    values = []
    for pad_to in (None, 24):
        inputs = _inputs(minilm_tokenizer, pad_to=pad_to)
        values.append(loss(_forward(loss, student, inputs), _forward(loss, teacher, inputs), inputs, None))
    assert torch.allclose(values[0], values[1], atol=1e-5)


@pytest.mark.parametrize("heads", ["average", "relation"])
def test_different_head_counts_work(heads, make_bert, minilm_tokenizer, distill_args):
    teacher, student = make_bert(layers=2, seed=1, heads=4), make_bert(layers=1, seed=2, heads=2)
    loss = AttentionLoss(distill_args(loss_type=["attention"], attention_heads=heads), student.config, teacher.config)
    inputs = _inputs(minilm_tokenizer)
    value = loss(_forward(loss, student, inputs), _forward(loss, teacher, inputs), inputs, None)
    assert torch.isfinite(value).all() and (value > 0).all()


def test_per_head_matching_needs_equal_head_counts(make_bert, distill_args):
    with pytest.raises(ValueError, match="set `attention_heads` to `average` or `relation`"):
        AttentionLoss(
            distill_args(loss_type=["attention"], attention_heads="per_head"),
            make_bert(heads=2).config,
            make_bert(heads=4).config,
        )


def test_attention_free_teacher_is_rejected_at_set_up(make_vit, distill_args):
    from transformers import ResNetConfig, ResNetForImageClassification

    teacher = ResNetForImageClassification(
        ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=10)
    )
    args = distill_args(loss_type=["soft_label", "attention"], image_column="image", text_columns=[])
    with pytest.raises(ValueError, match="has no self-attention.*soft_label"):
        DistillationTrainer(model=make_vit(), teacher_model=teacher, args=args)
    args = distill_args(loss_type=["hidden_state"], image_column="image", text_columns=[])
    with pytest.raises(ValueError, match="no per-token hidden states"):
        DistillationTrainer(model=make_vit(), teacher_model=teacher, args=args)


def test_different_patch_grids_are_rejected_at_set_up(make_vit, distill_args):
    teacher, student = make_vit(), make_vit()
    student.config.patch_size = 2  # a 4x4 grid against the teacher's 2x2
    args = distill_args(loss_type=["soft_label", "hidden_state"], image_column="image", text_columns=[])
    with pytest.raises(ValueError, match="patch grid.*soft_label"):
        DistillationTrainer(model=student, teacher_model=teacher, args=args)


def test_different_tokenizers_are_rejected_for_intermediate_losses(
    make_bert, distill_args, minilm_tokenizer, word_tokenizer
):
    import datasets

    from kd_hf.data import tokenize_for_pair

    # MiniLM reads "interminably" as three pieces, the word vocabulary as one word.
    rows = datasets.Dataset.from_dict({"text": ["a good film", "an interminably overlong mess"], "label": [1, 0]})
    train = tokenize_for_pair(rows, word_tokenizer, teacher_tokenizer=minilm_tokenizer)
    args = distill_args(loss_type=["soft_label", "attention"])
    with pytest.raises(ValueError, match=r"tokenize differently \(1 rows read as different tokens\).*attention"):
        DistillationTrainer(model=make_bert(), teacher_model=make_bert(), args=args, train_dataset=train)


def test_a_pruned_vocabulary_lines_up_with_the_teacher_on_both_splits_it_was_cut_from(
    make_bert, distill_args, minilm_tokenizer, caplog
):
    import datasets

    from kd_hf.data import misaligned_rows, tokenize_for_pair
    from kd_hf.vocabulary import prune_tokenizer

    train_texts, eval_texts = ["an interminably overlong mess", "a good film"], ["a quietly moving triumph"]

    def encode(texts, tokenizer):
        rows = datasets.Dataset.from_dict({"text": texts, "label": [1] * len(texts)})
        return tokenize_for_pair(rows, tokenizer, teacher_tokenizer=minilm_tokenizer)

    pruned, _ = prune_tokenizer(minilm_tokenizer, train_texts + eval_texts)
    train, evaluation = encode(train_texts, pruned), encode(eval_texts, pruned)
    assert list(train["input_ids"]) != list(train["teacher_input_ids"])  # other ids, the same pieces
    assert misaligned_rows(train) == misaligned_rows(evaluation) == 0
    args = distill_args(loss_type=["soft_label", "attention", "hidden_state"])
    with caplog.at_level("INFO", logger="kd_hf"):
        DistillationTrainer(
            model=make_bert(), teacher_model=make_bert(), args=args, train_dataset=train, eval_dataset=evaluation
        )
    assert "token positions line up" in caplog.text
    # Cut from the training texts alone, it splits an evaluation word ("quietly") the teacher reads whole: refused.
    pruned, _ = prune_tokenizer(minilm_tokenizer, train_texts)
    train, evaluation = encode(train_texts, pruned), encode(eval_texts, pruned)
    assert (misaligned_rows(train), misaligned_rows(evaluation)) == (0, 1)
    assert misaligned_rows(tokenize_for_pair(datasets.Dataset.from_dict({"text": eval_texts}), pruned)) is None
    with pytest.raises(ValueError, match=r"\(1 rows read as different tokens\).*prune_vocabulary"):
        DistillationTrainer(
            model=make_bert(), teacher_model=make_bert(), args=args, train_dataset=train, eval_dataset=evaluation
        )


def test_attention_loss_switches_models_to_eager_attention(make_bert, distill_args, caplog):
    teacher, student = make_bert(), make_bert()
    teacher.set_attn_implementation("sdpa")
    student.set_attn_implementation("sdpa")
    with caplog.at_level("INFO", logger="kd_hf"):
        DistillationTrainer(model=student, teacher_model=teacher, args=distill_args(loss_type=["attention"]))
    assert student.config._attn_implementation == teacher.config._attn_implementation == "eager"
    assert "eager attention" in caplog.text


def test_vision_attention_and_hidden_losses_are_zero_for_a_copy(make_vit, distill_args):
    teacher = make_vit(layers=2, seed=1)
    args = distill_args(loss_type=["attention", "hidden_state"], image_column="image", text_columns=[])
    trainer = DistillationTrainer(model=copy.deepcopy(teacher), teacher_model=teacher, args=args)
    batch = {"pixel_values": torch.randn(3, 1, 8, 8), "labels": torch.tensor([0, 1, 2])}
    trainer.model.train()  # parts are logged under the mode the model is in
    trainer.compute_loss(trainer.model, batch)
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    assert logged["attention_loss"] == pytest.approx(0.0, abs=1e-6)
    assert logged["hidden_state_loss"] == pytest.approx(0.0, abs=1e-6)


def _projection_run(make_bert, text_dataset, distill_args, minilm_tokenizer, resume=None):
    teacher, student = make_bert(layers=4, seed=1), make_bert(layers=2, seed=2, hidden=16)
    args = distill_args(
        loss_type=["soft_label", "hidden_state"], max_steps=4, save_strategy="steps", save_steps=2, layer_map="last"
    )
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=text_dataset[0],
        processing_class=minilm_tokenizer,
        data_collator=DistillationDataCollator(minilm_tokenizer),
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


@pytest.mark.slow
def test_projections_train_and_resume_bit_for_bit(make_bert, text_dataset, distill_args, minilm_tokenizer):
    trainer = _projection_run(make_bert, text_dataset, distill_args, minilm_tokenizer)
    output_dir = trainer.args.output_dir
    final = {k: v.clone() for k, v in trainer.loss_modules.state_dict().items()}
    at_step_2 = load_file(f"{output_dir}/checkpoint-2/{LOSS_STATE_NAME}")
    assert at_step_2.keys() == final.keys() and any(not torch.equal(at_step_2[k], final[k]) for k in final)

    resumed = _projection_run(
        make_bert, text_dataset, distill_args, minilm_tokenizer, resume=f"{output_dir}/checkpoint-2"
    )

    for key, value in resumed.loss_modules.state_dict().items():
        assert torch.equal(value, final[key]), key
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(value, trainer.model.state_dict()[key]), key


@pytest.mark.slow
def test_saved_student_holds_no_projection_weights(make_bert, text_dataset, distill_args, minilm_tokenizer, tmp_path):
    trainer = _projection_run(make_bert, text_dataset, distill_args, minilm_tokenizer)
    trainer.save_model(str(tmp_path / "student"))
    saved = load_file(tmp_path / "student" / "model.safetensors")
    assert set(saved) <= set(trainer.model.state_dict())
    assert not any("projection" in key for key in saved)
    assert not (tmp_path / "student" / LOSS_STATE_NAME).exists()
