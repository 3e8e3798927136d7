import datasets
import pytest
import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from kd_hf import DistillationTrainer
from kd_hf.data import DistillationDataCollator
from kd_hf.teacher_cache import cache_teacher_outputs


@pytest.fixture
def on_disk(text_dataset, tmp_path):
    """The tiny training set backed by Arrow files, as real datasets are: `map` results are cached next to them."""
    text_dataset[0].save_to_disk(tmp_path / "train")
    return datasets.load_from_disk(tmp_path / "train")


@pytest.fixture
def ragged(on_disk):
    """The same rows cut to 3 to 10 tokens, in no order of length."""
    tokens = [name for name in on_disk.column_names if name != "labels"]
    return on_disk.map(lambda row, i: {k: row[k][: 3 + i * 5 % 8] for k in tokens}, with_indices=True)


def _count_calls(model):
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_cache_stores_the_teachers_logits_and_is_reused(make_bert, on_disk, minilm_tokenizer):
    teacher = make_bert(seed=1)
    collator = DistillationDataCollator(minilm_tokenizer)
    calls = _count_calls(teacher)

    cached = cache_teacher_outputs(on_disk, teacher, collator, batch_size=8)
    assert len(calls) == 4  # 32 examples in batches of 8
    batch = collator([on_disk[i] for i in range(4)])
    batch.pop("labels")
    with torch.no_grad():
        expected = teacher(**batch).logits
    assert torch.allclose(torch.tensor(cached["teacher_logits"][:4]), expected, atol=1e-5)

    ran = len(calls)
    again = cache_teacher_outputs(on_disk, teacher, collator, batch_size=8)
    assert len(calls) == ran  # read from the datasets cache: the teacher did not run
    assert again["teacher_logits"] == cached["teacher_logits"]


def test_cache_is_keyed_on_what_the_teacher_reads_not_on_the_students_encoding(make_bert, on_disk, minilm_tokenizer):
    """A student with another vocabulary (a pruned one) reads other ids; the teacher reads its own `teacher_*` encoding,
    the same as before, so its outputs are reused, joined to the new student's rows."""
    teacher = make_bert(seed=1)
    cached = cache_teacher_outputs(on_disk, teacher, DistillationDataCollator(minilm_tokenizer), batch_size=8)
    calls = _count_calls(teacher)

    # Another student encoding of the same texts, beside the teacher's own (`teacher_*`), which is unchanged.
    teacher_inputs = [name for name in on_disk.column_names if name != "labels"]
    other_student = on_disk.map(
        lambda row: {
            "input_ids": [min(i, 99) for i in row["input_ids"]],
            **{"teacher_" + k: row[k] for k in teacher_inputs},
        }
    )
    collator = DistillationDataCollator(minilm_tokenizer, teacher_tokenizer=minilm_tokenizer)
    reused = cache_teacher_outputs(other_student, teacher, collator, batch_size=8)
    assert calls == []
    assert reused["teacher_logits"] == cached["teacher_logits"]
    assert reused["input_ids"] == other_student["input_ids"] != on_disk["input_ids"]  # the new student's rows

    # The same rows in another order are other inputs row by row: computed again, in that order.
    reordered = other_student.select(range(len(other_student) - 1, -1, -1))
    again = cache_teacher_outputs(reordered, teacher, collator, batch_size=8)
    assert len(calls) == 4
    assert torch.allclose(
        torch.tensor(again["teacher_logits"]), torch.tensor(cached["teacher_logits"][::-1]), atol=1e-5
    )


def test_teacher_runs_texts_by_length_and_each_row_keeps_its_own_logits(make_bert, ragged, minilm_tokenizer):
    teacher = make_bert(seed=1)
    collator = DistillationDataCollator(minilm_tokenizer)
    widths = []
    teacher.register_forward_hook(lambda module, args, kwargs, output: widths.append(kwargs["input_ids"].shape[1]),
                                  with_kwargs=True)  # fmt: skip
    texts = ragged
    cached = cache_teacher_outputs(texts, teacher, collator, batch_size=8)

    lengths = [len(ids) for ids in texts["input_ids"]]
    assert len(set(lengths)) == 8  # texts of 3 to 10 tokens, in no order
    by_length = sorted(lengths)
    assert widths == [max(by_length[i : i + 8]) for i in range(0, len(lengths), 8)]  # batches pad to their own
    assert sum(widths) < sum(max(lengths[i : i + 8]) for i in range(0, len(lengths), 8))  # less than in row order
    with torch.no_grad():
        for row, logits in zip(texts, cached["teacher_logits"]):
            alone = teacher(input_ids=torch.tensor([row["input_ids"]])).logits[0]
            assert torch.allclose(torch.tensor(logits), alone, atol=1e-5)


def test_changed_teacher_weights_recompute_the_cache(make_bert, on_disk, minilm_tokenizer):
    teacher = make_bert(seed=1)
    collator = DistillationDataCollator(minilm_tokenizer)
    first = cache_teacher_outputs(on_disk, teacher, collator, batch_size=8)
    with torch.no_grad():
        teacher.classifier.bias.add_(1.0)
    calls = _count_calls(teacher)
    second = cache_teacher_outputs(on_disk, teacher, collator, batch_size=8)
    assert len(calls) == 4
    assert second["teacher_logits"] != first["teacher_logits"]


def test_changed_teacher_config_recomputes_the_cache(make_bert, on_disk, minilm_tokenizer):
    teacher = make_bert(seed=1)
    collator = DistillationDataCollator(minilm_tokenizer)
    cache_teacher_outputs(on_disk, teacher, collator, batch_size=8)
    # The same weights under another config: other classes, and another attention kernel.
    teacher.config.id2label, teacher.config.label2id = {0: "bad", 1: "good"}, {"bad": 0, "good": 1}
    calls = _count_calls(teacher)
    cache_teacher_outputs(on_disk, teacher, collator, batch_size=8)
    assert len(calls) == 4
    teacher.set_attn_implementation("eager")
    cache_teacher_outputs(on_disk, teacher, collator, batch_size=8)
    assert len(calls) == 8
    # Where it was written from is no part of a teacher's identity.
    teacher.config.name_or_path = "somewhere/else"
    cache_teacher_outputs(on_disk, teacher, collator, batch_size=8)
    assert len(calls) == 8


def test_cached_attributions_keep_only_real_tokens(make_bert, on_disk, minilm_tokenizer):
    cached = cache_teacher_outputs(
        on_disk, make_bert(seed=1), DistillationDataCollator(minilm_tokenizer), attributions=True, batch_size=8
    )
    assert [len(a) for a in cached["teacher_attributions"]] == [len(ids) for ids in cached["input_ids"]]


@pytest.mark.slow
def test_trainer_with_teacher_cache_never_runs_the_teacher_while_training(
    make_bert, on_disk, distill_args, minilm_tokenizer
):
    teacher = make_bert(seed=1)
    args = distill_args(loss_type=["soft_label", "attribution"], teacher_cache=True, max_steps=3)
    trainer = DistillationTrainer(
        model=make_bert(seed=2), teacher_model=teacher, args=args, train_dataset=on_disk,
        data_collator=DistillationDataCollator(minilm_tokenizer),
    )  # fmt: skip
    assert {"teacher_logits", "teacher_attributions"} <= set(trainer.train_dataset.column_names)
    calls = _count_calls(teacher)
    trainer.train()
    assert calls == []
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert all(log["soft_label_loss"] > 0 and log["attribution_loss"] > 0 for log in logs)


@pytest.mark.slow
def test_batches_of_like_length_read_the_teacher_cache(make_bert, ragged, distill_args, minilm_tokenizer):
    """`train_sampling_strategy: group_by_length` batches rows of like length, and the cached teacher outputs travel
    with their rows."""
    texts = ragged
    teacher = make_bert(seed=1)
    args = distill_args(teacher_cache=True, train_sampling_strategy="group_by_length", max_steps=8)
    trainer = DistillationTrainer(
        model=make_bert(seed=2), teacher_model=teacher, args=args, train_dataset=texts,
        data_collator=DistillationDataCollator(minilm_tokenizer),
    )  # fmt: skip
    batches = []
    trainer.model.register_forward_pre_hook(
        lambda module, args, kwargs: batches.append(kwargs["attention_mask"].sum(-1).tolist()), with_kwargs=True
    )
    calls = _count_calls(teacher)
    trainer.train()

    assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler)
    assert calls == []
    # On 32 rows each batch of 8 is its own group ("megabatch"), which the sampler orders longest first (on the 10,246
    # training snippets a group is 50 batches, so batches hold texts of like length); then it swaps the longest text
    # into the first batch of the epoch, which can unsort two batches an epoch. Random batches are almost never sorted.
    assert len(batches) == 8 and max(batches[0]) == max(batches[4]) == max(map(len, texts["input_ids"]))
    assert sum(batch == sorted(batch, reverse=True) for batch in batches) >= 4


def test_teacher_cache_is_skipped_when_every_step_runs_the_teacher(
    make_bert, on_disk, distill_args, minilm_tokenizer, caplog
):
    """Hidden states need the live teacher at every step, which also gives the logits: a cache would go unread."""
    teacher = make_bert(seed=1)
    args = distill_args(loss_type=["soft_label", "hidden_state"], teacher_cache=True, max_steps=2)
    with caplog.at_level("WARNING", logger="kd_hf"):
        trainer = DistillationTrainer(
            model=make_bert(seed=2), teacher_model=teacher, args=args, train_dataset=on_disk,
            data_collator=DistillationDataCollator(minilm_tokenizer),
        )  # fmt: skip
    assert "teacher_logits" not in trainer.train_dataset.column_names
    assert "`teacher_cache` skipped" in caplog.text and "hidden_state" in caplog.text
    calls = _count_calls(teacher)
    trainer.train()
    assert len(calls) == 2
    assert all(log["hidden_state_loss"] > 0 for log in trainer.state.log_history if "loss" in log)


def test_losses_stopped_by_loss_steps_hand_the_rest_of_the_run_to_the_cache(
    make_bert, on_disk, distill_args, minilm_tokenizer, caplog
):
    """Two stages (TinyBERT's): hidden states for the first 2 steps, with the live teacher; soft labels throughout, from
    the cache once the hidden states stop."""
    teacher = make_bert(seed=1)
    args = distill_args(loss_type=["soft_label", "hidden_state"], loss_steps=[0, 2], teacher_cache=True, max_steps=5)
    with caplog.at_level("WARNING", logger="kd_hf"):
        trainer = DistillationTrainer(
            model=make_bert(seed=2), teacher_model=teacher, args=args, train_dataset=on_disk,
            data_collator=DistillationDataCollator(minilm_tokenizer),
        )  # fmt: skip
    assert "teacher_logits" in trainer.train_dataset.column_names
    assert "`teacher_cache` skipped" not in caplog.text
    calls = _count_calls(teacher)
    asked = []
    trainer.model.register_forward_pre_hook(lambda _, args, kwargs: asked.append(kwargs), with_kwargs=True)
    trainer.train()
    assert len(calls) == 2  # steps 0 and 1
    # Neither model is asked for hidden states once their loss has stopped.
    assert [bool(kwargs.get("output_hidden_states")) for kwargs in asked] == [True, True, False, False, False]
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert [("hidden_state_loss" in log) for log in logs] == [True, True, False, False, False]
    assert all(log["soft_label_loss"] > 0 for log in logs)


def test_cached_and_live_teacher_give_the_same_loss(make_bert, on_disk, distill_args, minilm_tokenizer):
    teacher, student = make_bert(seed=1), make_bert(seed=2).train()
    collator = DistillationDataCollator(minilm_tokenizer)
    cached = cache_teacher_outputs(on_disk, teacher, collator, attributions=True, batch_size=8)
    args = distill_args(loss_type=["soft_label", "attribution"])
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, data_collator=collator)
    live = trainer.compute_loss(student, collator([on_disk[i] for i in range(6)]))
    from_cache = trainer.compute_loss(student, collator([cached[i] for i in range(6)]))
    assert from_cache.item() == pytest.approx(live.item(), rel=1e-4)
