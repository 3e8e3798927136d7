"""The cheap live teacher (inference mode, optional bf16), per-step logging without syncs, and a cache that is safe
with data that changes from epoch to epoch. Behaviour only: timings live in benchmarks/overhead.py."""

import logging

import datasets
import pytest
import torch

from kd_hf import DistillationConfig, DistillationTrainer
from kd_hf.data import DistillationDataCollator
from kd_hf.pairing import load_model
from kd_hf.teacher_cache import uncacheable_reason


def _trainer(student, teacher, args, train, tokenizer):
    return DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=train,
        data_collator=DistillationDataCollator(tokenizer),
    )  # fmt: skip


def _batch(dataset, tokenizer, n=4):
    return DistillationDataCollator(tokenizer)([dataset[i] for i in range(n)])


class SavedTensors:
    """Counts the tensors autograd saves for a backward pass while the context is open."""

    def __init__(self):
        self.count = 0

    def __enter__(self):
        def pack(tensor):
            self.count += 1
            return tensor

        self.hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor)
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self.hooks.__exit__(*exc)


@pytest.mark.slow
def test_bf16_teacher_trains_a_fp32_student(make_bert, text_dataset, distill_args, minilm_tokenizer):
    teacher, student = make_bert(seed=1), make_bert(seed=2)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    args = distill_args(teacher_dtype="bfloat16", max_steps=3)
    trainer = _trainer(student, teacher, args, text_dataset[0], minilm_tokenizer)

    trainer.train()

    assert teacher.dtype == torch.bfloat16 and student.dtype == torch.float32
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert len(logs) == 3 and all(log["soft_label_loss"] > 0 and log["ce_loss"] > 0 for log in logs)
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())


def test_teacher_dtype_loads_the_teacher_in_that_precision(make_bert, minilm_tokenizer, tmp_path):
    make_bert(seed=1).save_pretrained(tmp_path / "teacher")
    assert load_model(str(tmp_path / "teacher"), dtype="bfloat16").dtype == torch.bfloat16
    assert load_model(str(tmp_path / "teacher")).dtype == torch.float32


def test_teacher_dtype_is_validated(tmp_path):
    with pytest.raises(ValueError, match="teacher_dtype"):
        DistillationConfig(output_dir=str(tmp_path), teacher_dtype="int8", report_to=[])
    with pytest.raises(ValueError, match="set only `teacher_dtype`"):
        DistillationConfig(
            output_dir=str(tmp_path), teacher_dtype="bfloat16", teacher_model_init_kwargs={"dtype": "float16"},
            report_to=[],
        )  # fmt: skip


def test_teacher_forward_keeps_no_graph_and_runs_in_inference_mode(
    make_bert, text_dataset, distill_args, minilm_tokenizer
):
    teacher, student = make_bert(seed=1), make_bert(seed=2).train()
    trainer = _trainer(student, teacher, distill_args(), text_dataset[0], minilm_tokenizer)
    modes = []
    teacher.register_forward_pre_hook(lambda *_: modes.append(torch.is_inference_mode_enabled()))
    batch = _batch(text_dataset[0], minilm_tokenizer)

    with SavedTensors() as saved:
        outputs = trainer.teacher_outputs(batch)
    assert modes == [True] and saved.count == 0
    assert outputs.logits.grad_fn is None and not outputs.logits.requires_grad
    # A normal tensor again, so that any loss may save it for the student's backward pass.
    assert not outputs.logits.is_inference()
    trainer.compute_loss(student, batch).backward()
    assert all(p.grad is None for p in teacher.parameters())


def test_teacher_forward_for_intermediate_losses_keeps_no_graph(
    make_bert, text_dataset, distill_args, minilm_tokenizer
):
    teacher, student = make_bert(seed=1), make_bert(seed=2).train()
    args = distill_args(loss_type=["soft_label", "attention", "hidden_state"])
    trainer = _trainer(student, teacher, args, text_dataset[0], minilm_tokenizer)
    batch = _batch(text_dataset[0], minilm_tokenizer)

    with SavedTensors() as saved:
        outputs = trainer.teacher_outputs(batch)
    assert saved.count == 0
    assert not any(t.requires_grad for t in (outputs.logits, *outputs.attentions, *outputs.hidden_states))
    trainer.compute_loss(student, batch).backward()  # the losses may save the teacher's maps


def test_step_losses_stay_tensors_until_logged(make_bert, text_dataset, distill_args, minilm_tokenizer):
    student = make_bert(seed=2).train()
    trainer = _trainer(student, make_bert(seed=1), distill_args(), text_dataset[0], minilm_tokenizer)
    for start in (0, 4):
        trainer.compute_loss(student, _batch(text_dataset[0].select(range(start, start + 4)), minilm_tokenizer))

    values = trainer._metrics["train"]["soft_label_loss"]
    assert len(values) == 2 and all(isinstance(v, torch.Tensor) and v.grad_fn is None for v in values)
    expected = torch.stack(values).mean().item()
    means = trainer._mean_metrics("train")
    assert means["soft_label_loss"] == pytest.approx(expected) and isinstance(means["ce_loss"], float)
    assert not trainer._metrics["train"]


def _count_calls(model):
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.slow
def test_cache_is_off_for_a_dataset_with_a_random_transform(
    make_bert, text_dataset, distill_args, minilm_tokenizer, caplog
):
    generator = torch.Generator().manual_seed(0)

    def word_dropout(batch):
        """Random augmentation: each epoch masks other tokens."""
        ids = [[t if torch.rand((), generator=generator) > 0.2 else 100 for t in row] for row in batch["input_ids"]]
        return {**batch, "input_ids": ids}

    augmented = text_dataset[0].with_transform(word_dropout)
    assert "transform" in uncacheable_reason(augmented)
    teacher = make_bert(seed=1)
    args = distill_args(teacher_cache=True, max_steps=2)

    with caplog.at_level(logging.WARNING, logger="kd_hf.teacher_cache"):
        trainer = _trainer(make_bert(seed=2), teacher, args, augmented, minilm_tokenizer)
    assert "Teacher cache off" in caplog.text and "with_transform" in caplog.text
    assert trainer.train_dataset is augmented and "teacher_logits" not in trainer.train_dataset.column_names
    calls = _count_calls(teacher)
    trainer.train()
    assert len(calls) == 2  # the live teacher, on each step's augmented inputs


def test_cache_is_kept_for_a_fixed_dataset_and_off_for_a_stream(text_dataset):
    assert uncacheable_reason(text_dataset[0]) is None
    assert uncacheable_reason(text_dataset[0].with_format("torch")) is None
    assert "IterableDataset" in uncacheable_reason(text_dataset[0].to_iterable_dataset())
    assert isinstance(text_dataset[0].to_iterable_dataset(), datasets.IterableDataset)
