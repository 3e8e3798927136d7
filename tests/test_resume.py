"""An interrupted run resumes exactly: every weight back (ViT's renamed ones too), from the last complete checkpoint,
and only with the recipe it was started with."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback, default_data_collator

from kd_hf import DistillationConfig, DistillationTrainer
from kd_hf.data import DistillationDataCollator
from kd_hf.run import train


class StopAt(TrainerCallback):
    """Stops training after `step` (once its checkpoint is written): an interruption that keeps the run's schedule."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def _weights(model) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _assert_same_weights(expected: dict, actual: dict) -> None:
    assert expected.keys() == actual.keys()
    different = [key for key in expected if not torch.equal(expected[key], actual[key])]
    assert not different, f"{len(different)} of {len(expected)} tensors differ: {different[:4]}"


@pytest.fixture
def digits():
    """24 training and 8 evaluation 8x8 one-channel digits, as pixel tensors."""
    from transformers import ViTConfig

    from kd_hf.data import default_image_processor, load_offline_dataset, preprocess_images

    raw = load_offline_dataset("digits")
    processor = default_image_processor(ViTConfig(image_size=8, num_channels=1))
    return tuple(
        preprocess_images(raw[split].select(range(n)), processor, num_channels=1)
        for split, n in (("train", 24), ("validation", 8))
    )


def _distil(student, teacher, args, datasets, collator, callbacks=(), resume=None):
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=datasets[0],
        eval_dataset=datasets[1],
        data_collator=collator,
        callbacks=list(callbacks),
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def _interrupted_and_resumed(make_student, make_teacher, run_args, datasets, collator, **fields):
    """Final weights of a 4-step run, and of the same run stopped after step 2 and resumed by a new trainer."""
    args = dict(max_steps=4, save_strategy="steps", save_steps=2, **fields)
    straight = _distil(make_student(), make_teacher(), run_args(output_dir="straight", **args), datasets, collator)
    interrupted = run_args(output_dir="interrupted", **args)
    _distil(make_student(), make_teacher(), interrupted, datasets, collator, callbacks=[StopAt(2)])
    resumed = _distil(
        make_student(),
        make_teacher(),
        interrupted,
        datasets,
        collator,
        resume=f"{interrupted.output_dir}/checkpoint-2",
    )
    assert straight.state.global_step == resumed.state.global_step == 4
    return _weights(straight.model), _weights(resumed.model)


@pytest.fixture
def run_args(tmp_path):
    def make(output_dir, **overrides):
        fields = dict(
            output_dir=str(tmp_path / output_dir),
            per_device_train_batch_size=8,
            per_device_eval_batch_size=8,
            learning_rate=1e-3,
            report_to=[],
            logging_steps=1,
            use_cpu=True,
            seed=0,
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        return DistillationConfig(**{**fields, **overrides})

    return make


# Item 4: every weight comes back.


@pytest.mark.slow
def test_distillation_resumes_a_bert_student_exactly(make_bert, text_dataset, run_args, minilm_tokenizer):
    straight, resumed = _interrupted_and_resumed(
        lambda: make_bert(seed=2), lambda: make_bert(layers=4, seed=1), run_args, text_dataset,
        DistillationDataCollator(minilm_tokenizer),
    )  # fmt: skip
    _assert_same_weights(straight, resumed)


@pytest.mark.slow
def test_distillation_resumes_a_vit_student_exactly(make_vit, digits, run_args):
    straight, resumed = _interrupted_and_resumed(
        lambda: make_vit(layers=1, hidden=16, seed=2), lambda: make_vit(seed=1), run_args, digits,
        default_data_collator, image_column="image", text_columns=[],
    )  # fmt: skip
    _assert_same_weights(straight, resumed)


def _train_recipe(tmp_path, output_dir, model_config, **fields):
    return DistillationConfig(
        output_dir=str(tmp_path / output_dir),
        model_init="config",
        model_config=model_config,
        dataset_name="offline:digits",
        image_column="image",
        max_train_samples=24,
        max_eval_samples=8,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        learning_rate=1e-3,
        lr_scheduler_type="constant",  # so that a 2-step run extended to 4 follows the 4-step run's schedule
        save_strategy="steps",
        save_steps=2,
        use_cpu=True,
        seed=0,
        report_to=[],
        disable_tqdm=True,
        **fields,
    )


VIT = dict(model_type="vit", image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=2,
           num_attention_heads=2, intermediate_size=32)  # fmt: skip
RESNET = dict(model_type="resnet", image_size=8, num_channels=1, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])


@pytest.mark.slow
@pytest.mark.parametrize("model_config", [VIT, RESNET], ids=["vit", "resnet"])
def test_kd_hf_train_resumes_exactly(tmp_path, model_config):
    straight = train(_train_recipe(tmp_path, "straight", model_config, max_steps=4))
    train(_train_recipe(tmp_path, "interrupted", model_config, max_steps=2))
    resumed = train(_train_recipe(tmp_path, "interrupted", model_config, max_steps=4))  # resumes from checkpoint-2
    assert resumed.state.global_step == 4
    _assert_same_weights(_weights(straight.model), _weights(resumed.model))


@pytest.mark.slow
def test_the_best_vit_checkpoint_comes_back_whole(make_vit, digits, run_args):
    from transformers import ViTForImageClassification

    # Its eval loss is lowest at step 2 (seeded), so that the best checkpoint is an earlier one than the last.
    args = run_args(
        "best", max_steps=4, save_strategy="steps", save_steps=2, eval_strategy="steps", eval_steps=2,
        load_best_model_at_end=True, metric_for_best_model="loss", greater_is_better=False, image_column="image",
        text_columns=[],
    )  # fmt: skip
    trainer = _distil(make_vit(layers=1, hidden=16, seed=2), make_vit(seed=1), args, digits, default_data_collator)
    assert trainer.state.best_model_checkpoint.endswith("checkpoint-2")
    best = ViTForImageClassification.from_pretrained(trainer.state.best_model_checkpoint)
    _assert_same_weights(_weights(best), _weights(trainer.model))


def _one_checkpoint(make_bert, text_dataset, run_args, minilm_tokenizer):
    args = run_args("run", max_steps=2, save_strategy="steps", save_steps=2)
    collator = DistillationDataCollator(minilm_tokenizer)
    _distil(make_bert(seed=2), make_bert(seed=1), args, text_dataset, collator)
    return args, collator, f"{args.output_dir}/checkpoint-2"


@pytest.mark.slow
@pytest.mark.parametrize("change", ["missing", "unexpected"])
def test_resuming_from_a_checkpoint_with_other_weights_fails(
    make_bert, text_dataset, run_args, minilm_tokenizer, change
):
    args, collator, checkpoint = _one_checkpoint(make_bert, text_dataset, run_args, minilm_tokenizer)
    weights = load_file(f"{checkpoint}/model.safetensors")
    if change == "missing":
        del weights["classifier.bias"]
    else:
        weights["classifier.extra"] = torch.zeros(2)
    save_file(weights, f"{checkpoint}/model.safetensors", metadata={"format": "pt"})
    args = run_args("run", max_steps=4, save_strategy="steps", save_steps=2)

    with pytest.raises(ValueError, match=f"{checkpoint}.*classifier.{'bias' if change == 'missing' else 'extra'}"):
        _distil(make_bert(seed=2), make_bert(seed=1), args, text_dataset, collator, resume=checkpoint)


# Item 5: the last complete checkpoint, and a full disk that says so.


def _cut(path, keep=0.5):
    with open(path, "rb") as file:
        data = file.read()
    with open(path, "wb") as file:
        file.write(data[: int(len(data) * keep)])


@pytest.mark.slow
def test_auto_resume_skips_a_checkpoint_cut_short(make_bert, text_dataset, run_args, minilm_tokenizer, caplog):
    from kd_hf.run import _fit

    args = run_args("run", max_steps=4, save_strategy="steps", save_steps=2)
    collator = DistillationDataCollator(minilm_tokenizer)
    straight = _weights(_distil(make_bert(seed=2), make_bert(seed=1), args, text_dataset, collator).model)
    _cut(f"{args.output_dir}/checkpoint-4/model.safetensors")  # a crash while checkpoint-4 was written

    trainer = DistillationTrainer(
        model=make_bert(seed=2), teacher_model=make_bert(seed=1), args=args, train_dataset=text_dataset[0],
        eval_dataset=text_dataset[1], data_collator=collator,
    )  # fmt: skip
    with caplog.at_level("INFO", logger="kd_hf"):
        _fit(trainer, args, "distill")

    assert f"Skipping the incomplete {args.output_dir}/checkpoint-4: model.safetensors is cut short" in caplog.text
    assert f"Resuming from {args.output_dir}/checkpoint-2" in caplog.text
    _assert_same_weights(straight, _weights(trainer.model))


@pytest.mark.slow
def test_incomplete_checkpoints_are_told_apart(make_bert, text_dataset, run_args, minilm_tokenizer, tmp_path):
    import shutil

    from kd_hf.checkpoints import checkpoint_problem

    _, _, checkpoint = _one_checkpoint(make_bert, text_dataset, run_args, minilm_tokenizer)
    assert checkpoint_problem(checkpoint) is None
    defects = {
        "trainer_state.json": "no trainer_state.json",
        "optimizer.pt": "no optimizer state",
        "scheduler.pt": "no scheduler state",
    }
    for name, problem in defects.items():
        broken = shutil.copytree(checkpoint, tmp_path / f"without-{name}")
        (broken / name).unlink()
        assert checkpoint_problem(str(broken)).startswith(problem), name
    for name in ("model.safetensors", "optimizer.pt", "trainer_state.json", "rng_state.pth"):
        broken = shutil.copytree(checkpoint, tmp_path / f"cut-{name}")
        _cut(broken / name, keep=0.9)
        assert name in checkpoint_problem(str(broken)), name
    # Without the optimizer (`save_only_model`), the weights and the state suffice.
    assert checkpoint_problem(str(tmp_path / "without-optimizer.pt"), needs_optimizer=False) is None


def test_no_complete_checkpoint_is_refused_rather_than_overwritten(tmp_path):
    from kd_hf.checkpoints import last_complete_checkpoint

    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "model.safetensors").write_bytes(b"\x08")
    with pytest.raises(ValueError, match="No complete checkpoint.*checkpoint-2.*overwrite_output_dir"):
        last_complete_checkpoint(str(tmp_path))
    assert last_complete_checkpoint(str(tmp_path / "empty")) is None


def _raise_disk_full(kind):
    import errno

    from safetensors import SafetensorError

    def save(*args, **kwargs):
        if kind == "oserror":
            raise OSError(errno.ENOSPC, "No space left on device")
        if kind == "safetensors":
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")  # torch.save

    return save


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["oserror", "safetensors", "torch"])
def test_a_full_disk_while_saving_a_checkpoint_says_so(
    make_bert, text_dataset, run_args, minilm_tokenizer, monkeypatch, kind
):
    import errno
    import re
    import shutil
    from collections import namedtuple

    from transformers import Trainer

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", _raise_disk_full(kind))
    if kind == "torch":  # torch's message names no cause; the disk it filled does
        usage = namedtuple("usage", "total used free")
        monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**30, 2**30, 0))
    args = run_args("run", max_steps=2, save_strategy="steps", save_steps=2)

    with pytest.raises(OSError, match=re.escape(f"checkpoint-2; free space in {args.output_dir}")) as raised:
        _distil(make_bert(seed=2), make_bert(seed=1), args, text_dataset, DistillationDataCollator(minilm_tokenizer))
    assert raised.value.errno == errno.ENOSPC and "No space left on device while writing" in str(raised.value)


@pytest.mark.slow
def test_a_run_that_ran_out_of_disk_resumes_from_its_last_complete_checkpoint(
    make_bert, text_dataset, run_args, minilm_tokenizer, monkeypatch
):
    from transformers import Trainer

    from kd_hf.run import _fit

    collator = DistillationDataCollator(minilm_tokenizer)
    fields = dict(max_steps=4, save_strategy="steps", save_steps=2)
    straight = _weights(_distil(make_bert(seed=2), make_bert(seed=1), run_args("straight", **fields), text_dataset,
                                collator).model)  # fmt: skip
    save = Trainer._save_optimizer_and_scheduler

    def full_at_step_4(self, output_dir):
        (_raise_disk_full("oserror") if self.state.global_step == 4 else save)(self, output_dir)

    args = run_args("run", **fields)
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_save_optimizer_and_scheduler", full_at_step_4)
        with pytest.raises(OSError, match="No space left on device while writing checkpoint-4"):
            _distil(make_bert(seed=2), make_bert(seed=1), args, text_dataset, collator)

    trainer = DistillationTrainer(
        model=make_bert(seed=2), teacher_model=make_bert(seed=1), args=args, train_dataset=text_dataset[0],
        data_collator=collator,
    )  # fmt: skip
    _fit(trainer, args, "distill")
    assert trainer.state.global_step == 4
    _assert_same_weights(straight, _weights(trainer.model))


# Item 9: a rerun trains under the recipe its checkpoints were made with, or starts over.


class CountSteps(TrainerCallback):
    def __init__(self):
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1


@pytest.mark.slow
def test_a_changed_recipe_does_not_resume_the_old_run(tiny_text_project, tmp_path, caplog):
    import json

    from kd_hf.cli import parse_recipe
    from kd_hf.run import distill

    recipe = str(tiny_text_project(explanation_examples=0))
    folder = tmp_path / "student"
    distill(parse_recipe([recipe]))
    assert json.loads((folder / "kd_hf_recipe.json").read_text())["temperature"] == 2.0

    with pytest.raises(ValueError, match=r"another recipe \(`temperature` 2.0 -> 3.0\).*overwrite_output_dir: true"):
        distill(parse_recipe([recipe, "--temperature", "3"]))
    assert json.loads((folder / "kd_hf_recipe.json").read_text())["temperature"] == 2.0

    # What does not change the weights (logging, evaluation, how far to train) still resumes.
    counter = CountSteps()
    with caplog.at_level("INFO", logger="kd_hf"):
        distill(parse_recipe([recipe, "--logging_steps", "2", "--explanation_examples", "1"]), callbacks=[counter])
    assert f"Resuming from {folder}/checkpoint-4" in caplog.text and counter.steps == 0

    counter = CountSteps()
    changed = [recipe, "--temperature", "3", "--max_steps", "2", "--overwrite_output_dir", "true"]
    trainer = distill(parse_recipe(changed), callbacks=[counter])
    assert counter.steps == 2 and trainer.state.global_step == 2  # from step 0
    assert sorted(path.name for path in folder.glob("checkpoint-*")) == ["checkpoint-2"]
    assert json.loads((folder / "kd_hf_recipe.json").read_text())["temperature"] == 3.0


def test_the_recorded_recipe_holds_no_token(tmp_path):
    from kd_hf.checkpoints import training_recipe

    args = DistillationConfig(
        output_dir=str(tmp_path), hub_token="hf_secret", model_init_kwargs={"token": "hf_secret", "revision": "v1"},
        report_to=[],
    )  # fmt: skip
    recipe = training_recipe(args, "train")
    assert "hf_secret" not in str(recipe) and recipe["model_init_kwargs"] == {"revision": "v1"}
    assert "logging_steps" not in recipe and recipe["learning_rate"] == args.learning_rate
