import copy

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from kd_hf import DistillationTrainer
from kd_hf.data import DistillationDataCollator


def _trainer(student, teacher, args, datasets, tokenizer, **kwargs):
    train, evaluation = datasets
    return DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        data_collator=DistillationDataCollator(tokenizer),
        **kwargs,
    )


def _batch(dataset, tokenizer, n=4):
    return DistillationDataCollator(tokenizer)([dataset[i] for i in range(n)])


def test_compute_loss_matches_hand_computation(make_bert, text_dataset, distill_args, minilm_tokenizer):
    teacher, student = make_bert(seed=1), make_bert(seed=2)
    args = distill_args(alpha=0.3, temperature=2.0)
    trainer = _trainer(student, teacher, args, text_dataset, minilm_tokenizer)
    batch = _batch(text_dataset[0], minilm_tokenizer)
    model_inputs = {k: v for k, v in batch.items() if k != "labels"}

    loss = trainer.compute_loss(student, batch)

    with torch.no_grad():
        s, t = student(**model_inputs).logits, teacher(**model_inputs).logits
    ce = F.cross_entropy(s, batch["labels"])
    p_t = F.softmax(t / 2.0, -1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / 2.0, -1))).sum(-1).mean() * 4.0
    assert loss.item() == pytest.approx((0.3 * ce + 0.7 * kl).item(), rel=1e-5)


@pytest.mark.slow
def test_teacher_is_frozen_unwrapped_and_never_saved(make_bert, text_dataset, distill_args, minilm_tokenizer):
    teacher, student = make_bert(layers=4, seed=1), make_bert(layers=2, seed=2)
    before = copy.deepcopy(teacher.state_dict())
    args = distill_args(max_steps=2, save_strategy="steps", save_steps=2)
    trainer = _trainer(student, teacher, args, text_dataset, minilm_tokenizer)

    trainer.train()

    assert trainer.teacher is teacher and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    saved = load_file(f"{args.output_dir}/checkpoint-2/model.safetensors")
    assert set(saved) <= set(student.state_dict())
    assert not any(".layer.2." in key or ".layer.3." in key for key in saved)  # layers only the teacher has
    assert sum(t.numel() for t in saved.values()) <= sum(p.numel() for p in student.parameters())


@pytest.mark.slow
def test_each_loss_part_is_logged(make_bert, text_dataset, distill_args, minilm_tokenizer):
    trainer = _trainer(make_bert(seed=2), make_bert(seed=1), distill_args(max_steps=2), text_dataset, minilm_tokenizer)
    trainer.train()
    step_logs = [log for log in trainer.state.log_history if "loss" in log]
    assert len(step_logs) == 2
    for log in step_logs:
        assert log["soft_label_loss"] > 0 and log["ce_loss"] > 0


def test_evaluation_reports_accuracy_and_teacher_agreement(make_bert, text_dataset, distill_args, minilm_tokenizer):
    teacher = make_bert(seed=1)
    trainer = _trainer(copy.deepcopy(teacher), teacher, distill_args(), text_dataset, minilm_tokenizer)
    metrics = trainer.evaluate()
    assert metrics["eval_teacher_agreement"] == 1.0
    assert metrics["eval_soft_label_loss"] == pytest.approx(0.0, abs=1e-6)
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and "eval_macro_f1" in metrics


def test_teacher_with_reordered_labels_is_realigned(make_bert, text_dataset, distill_args, minilm_tokenizer):
    student = make_bert(seed=1)
    teacher = copy.deepcopy(student)
    # The same classifier with its classes listed the other way round.
    teacher.config.id2label, teacher.config.label2id = {0: "positive", 1: "negative"}, {"positive": 0, "negative": 1}
    teacher.classifier.weight.data = teacher.classifier.weight.data.flip(0)
    teacher.classifier.bias.data = teacher.classifier.bias.data.flip(0)

    metrics = _trainer(student, teacher, distill_args(), text_dataset, minilm_tokenizer).evaluate()

    assert metrics["eval_teacher_agreement"] == 1.0
    assert metrics["eval_soft_label_loss"] == pytest.approx(0.0, abs=1e-6)


def test_mismatched_label_spaces_fail_before_training(make_bert, text_dataset, distill_args, minilm_tokenizer):
    teacher = make_bert(labels=("negative", "neutral", "positive"))
    with pytest.raises(ValueError, match="3 labels.*label_mapping"):
        _trainer(make_bert(), teacher, distill_args(), text_dataset, minilm_tokenizer)


def test_missing_teacher_is_reported(make_bert, text_dataset, distill_args, minilm_tokenizer):
    with pytest.raises(ValueError, match="teacher_model_name_or_path"):
        _trainer(make_bert(), None, distill_args(), text_dataset, minilm_tokenizer)


def _train_once(make_bert, text_dataset, distill_args, minilm_tokenizer, **overrides):
    teacher, student = make_bert(seed=1), make_bert(seed=2)
    args = distill_args(max_steps=1, optim="sgd", learning_rate=0.5, max_grad_norm=0.0, warmup_steps=0, **overrides)
    train = text_dataset[0].select(range(12))
    _trainer(student, teacher, args, (train, None), minilm_tokenizer).train()
    return student.state_dict()


@pytest.mark.slow
def test_gradient_accumulation_gives_the_loss_of_one_large_batch(
    make_bert, text_dataset, distill_args, minilm_tokenizer
):
    large = _train_once(make_bert, text_dataset, distill_args, minilm_tokenizer, per_device_train_batch_size=12)
    # Three uneven micro-batches (5, 5, 2) must weigh each example as the single batch of 12 does.
    accumulated = _train_once(
        make_bert,
        text_dataset,
        distill_args,
        minilm_tokenizer,
        per_device_train_batch_size=5,
        gradient_accumulation_steps=3,
    )
    initial = make_bert(seed=2).state_dict()
    assert not torch.allclose(large["classifier.weight"], initial["classifier.weight"])
    # Averaging per micro-batch instead would be off by ~1e-6 here: compare well below that.
    for key in large:
        torch.testing.assert_close(large[key], accumulated[key], atol=1e-7, rtol=0, msg=key)


@pytest.mark.slow
def test_resume_from_checkpoint_continues_the_same_run(make_bert, text_dataset, distill_args, minilm_tokenizer):
    def run(resume=None):
        student = make_bert(seed=2)
        args = distill_args(max_steps=4, save_strategy="steps", save_steps=2)
        _trainer(student, make_bert(seed=1), args, text_dataset, minilm_tokenizer).train(resume_from_checkpoint=resume)
        return student.state_dict(), args.output_dir

    uninterrupted, output_dir = run()
    resumed, _ = run(resume=f"{output_dir}/checkpoint-2")
    for key in uninterrupted:
        assert torch.allclose(uninterrupted[key], resumed[key], atol=1e-6), key


@pytest.mark.slow
def test_vision_students_distil_from_a_vit_teacher(make_vit, distill_args):
    import datasets
    from transformers import default_data_collator

    from kd_hf.data import preprocess_images
    from kd_hf.data.offline import load_offline_dataset
    from kd_hf.data.vision import default_image_processor

    teacher, student = make_vit(layers=2, seed=1), make_vit(layers=1, hidden=16, seed=2)
    digits = load_offline_dataset("digits")
    processor = default_image_processor(student.config)
    train, evaluation = (
        preprocess_images(digits[split].select(range(24)), processor, num_channels=1)
        for split in ("train", "validation")
    )
    assert isinstance(train, datasets.Dataset)
    args = distill_args(max_steps=2, image_column="image", text_columns=[])
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=default_data_collator,
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_teacher_agreement"] <= 1.0 and metrics["eval_soft_label_loss"] > 0


@pytest.mark.slow
def test_teacher_and_student_with_different_tokenizers_each_read_their_own(
    make_bert, distill_args, minilm_tokenizer, word_tokenizer
):
    import datasets

    from kd_hf.data import tokenize_for_pair
    from tests.conftest import sentiment_rows

    rows = datasets.Dataset.from_dict(sentiment_rows(16))
    train = tokenize_for_pair(rows, word_tokenizer, teacher_tokenizer=minilm_tokenizer, max_length=32)
    assert "teacher_input_ids" in train.column_names
    student = make_bert(seed=2, vocab_size=len(word_tokenizer))
    teacher = make_bert(seed=1)
    seen = {}

    def record(name):
        def hook(module, args, kwargs):
            seen.setdefault(name, kwargs["input_ids"])

        return hook

    teacher.register_forward_pre_hook(record("teacher"), with_kwargs=True)
    student.register_forward_pre_hook(record("student"), with_kwargs=True)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=distill_args(max_steps=2),
        train_dataset=train,
        processing_class=word_tokenizer,
        data_collator=DistillationDataCollator(word_tokenizer, teacher_tokenizer=minilm_tokenizer),
    )
    trainer.train()

    texts = set(rows["text"])
    teacher_text = minilm_tokenizer.decode(seen["teacher"][0], skip_special_tokens=True)
    student_text = word_tokenizer.decode(seen["student"][0], skip_special_tokens=True)
    assert teacher_text.replace(" ,", ",") in texts
    assert student_text.replace(" ,", ",") in texts
    assert seen["student"].max() < len(word_tokenizer) < seen["teacher"].max()


def test_bf16_teacher_reads_fp32_pixels(make_vit, distill_args):
    teacher, student = make_vit(seed=1).to(torch.bfloat16), make_vit(seed=2)
    args = distill_args(image_column="image", text_columns=[])
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args)
    batch = {"pixel_values": torch.randn(3, 1, 8, 8), "labels": torch.tensor([0, 1, 2])}
    loss = trainer.compute_loss(student, batch)
    assert torch.isfinite(loss) and loss.dtype == torch.float32
