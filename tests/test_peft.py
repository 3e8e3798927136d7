"""PEFT: adapter teachers, and students trained through an adapter (merged into plain weights, or kept)."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForSequenceClassification

from kd_hf import DistillationTrainer, run
from kd_hf.cli import parse_recipe
from kd_hf.hub import load_student, push_student
from kd_hf.pairing import apply_peft, load_model, load_processor


TEXTS = ["a great film", "a dull and boring cast"]


def logits(model, tokenizer):
    with torch.no_grad():
        return model(**tokenizer(TEXTS, return_tensors="pt", padding=True)).logits


def test_an_adapter_teacher_gives_the_logits_of_its_adapter_model(tmp_path, make_bert, minilm_tokenizer):
    make_bert(seed=1).save_pretrained(tmp_path / "base")
    minilm_tokenizer.save_pretrained(tmp_path / "base")
    config = LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS", init_lora_weights=False)
    adapter_model = get_peft_model(make_bert(seed=1), config).eval()  # random B: the adapter changes the logits
    adapter_model.save_pretrained(tmp_path / "adapter")
    # `save_pretrained` of a peft model records where its base came from; point it at the saved base.
    (tmp_path / "adapter" / "adapter_config.json").write_text(
        (tmp_path / "adapter" / "adapter_config.json").read_text().replace('"base_model_name_or_path": null',
                                                                          f'"base_model_name_or_path": "{tmp_path / "base"}"')
    )  # fmt: skip

    teacher = load_model(str(tmp_path / "adapter"))
    assert not hasattr(teacher, "peft_config")  # merged: a plain transformers model
    expected = logits(adapter_model, minilm_tokenizer)
    assert (expected - logits(make_bert(seed=1), minilm_tokenizer)).abs().max() > 1e-4  # not the base alone
    torch.testing.assert_close(logits(teacher, minilm_tokenizer), expected, atol=1e-5, rtol=1e-5)
    # Its tokenizer comes from the base when the adapter folder has none.
    assert load_processor(str(tmp_path / "adapter")).vocab_size == minilm_tokenizer.vocab_size


@pytest.mark.slow
def test_a_lora_student_trains_only_its_adapter_and_head(make_bert, text_dataset, distill_args, minilm_tokenizer):
    train, evaluation = text_dataset
    student = apply_peft(make_bert(layers=1, seed=2), {"r": 4, "target_modules": ["query", "value"]})
    before = {name: value.clone() for name, value in student.named_parameters()}
    trainable = {name for name, value in student.named_parameters() if value.requires_grad}
    assert trainable and all("lora_" in name or "classifier" in name for name in trainable)

    trainer = DistillationTrainer(
        model=student, teacher_model=make_bert(seed=1), args=distill_args(max_steps=3, learning_rate=1e-2),
        train_dataset=train, eval_dataset=evaluation, processing_class=minilm_tokenizer,
    )  # fmt: skip
    trainer.train()
    changed = {name for name, value in student.named_parameters() if not torch.equal(value, before[name])}
    assert changed <= trainable  # the base weights never move
    assert any("lora_B" in name for name in changed) and any("classifier" in name for name in changed)


@pytest.mark.slow
def test_a_merged_lora_student_loads_and_pushes_as_plain_weights(tiny_text_project, tmp_path, hub_server):
    config = parse_recipe([str(tiny_text_project(peft_config='{"r": 4, "target_modules": ["query", "value"]}'))])
    trainer = run.distill(config)
    folder = tmp_path / "student"
    tokenizer = load_processor(str(folder))

    # Checkpoints hold the adapter; the final folder plain weights, with the adapter kept aside.
    assert (folder / "checkpoint-2" / "adapter_model.safetensors").is_file()
    assert not (folder / "checkpoint-2" / "model.safetensors").exists()
    assert (folder / "adapter" / "adapter_config.json").is_file() and not (folder / "adapter_config.json").exists()
    plain = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert not any("lora" in name for name, _ in plain.named_parameters())
    adapter_logits = logits(trainer.model.eval(), tokenizer)
    torch.testing.assert_close(logits(plain, tokenizer), adapter_logits, atol=1e-5, rtol=1e-5)

    push_student(str(folder), "kd-hf-tester/lora-student")
    assert not any(name.startswith("adapter") for name in hub_server.files("kd-hf-tester/lora-student"))
    pulled = AutoModelForSequenceClassification.from_pretrained("kd-hf-tester/lora-student")
    torch.testing.assert_close(logits(pulled, tokenizer), adapter_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_an_unmerged_lora_student_is_saved_as_an_adapter_that_loads_back(tiny_text_project, tmp_path):
    recipe = tiny_text_project(
        peft_config='{"r": 4, "target_modules": ["query", "value"]}', merge_adapter=False,
        model_init="checkpoint", model_name_or_path=str(tmp_path / "teacher"),
    )  # fmt: skip
    trainer = run.distill(parse_recipe([str(recipe)]))
    folder = tmp_path / "student"
    assert (folder / "adapter_config.json").is_file() and not (folder / "model.safetensors").exists()
    student = load_student(str(folder))
    torch.testing.assert_close(
        logits(student.model, student.processor), logits(trainer.model.eval(), student.processor), atol=1e-5, rtol=1e-5
    )


def test_an_adapter_alone_needs_a_base_checkpoint(distill_args):
    with pytest.raises(ValueError, match="model_init: checkpoint"):
        distill_args(peft_config={"r": 4}, merge_adapter=False, model_init="config", teacher_model_name_or_path="t")
