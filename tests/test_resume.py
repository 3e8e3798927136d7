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
    assert not different, f"{len(different)} of {len(expected)} tensors differ after resuming: {different[:4]}"


@pytest.fixture
def digits():
    """24 training and 8 evaluation 8x8 one-channel digits, as pixel tensors."""
    from kd_hf.data import default_image_processor, load_offline_dataset, preprocess_images
    from transformers import ViTConfig

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
        make_student(), make_teacher(), interrupted, datasets, collator, resume=f"{interrupted.output_dir}/checkpoint-2"
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


def test_distillation_resumes_a_bert_student_exactly(make_bert, text_dataset, run_args, minilm_tokenizer):
    straight, resumed = _interrupted_and_resumed(
        lambda: make_bert(seed=2), lambda: make_bert(layers=4, seed=1), run_args, text_dataset,
        DistillationDataCollator(minilm_tokenizer),
    )  # fmt: skip
    _assert_same_weights(straight, resumed)


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


@pytest.mark.parametrize("model_config", [VIT, RESNET], ids=["vit", "resnet"])
def test_kd_hf_train_resumes_exactly(tmp_path, model_config):
    straight = train(_train_recipe(tmp_path, "straight", model_config, max_steps=4))
    train(_train_recipe(tmp_path, "interrupted", model_config, max_steps=2))
    resumed = train(_train_recipe(tmp_path, "interrupted", model_config, max_steps=4))  # resumes from checkpoint-2
    assert resumed.state.global_step == 4
    _assert_same_weights(_weights(straight.model), _weights(resumed.model))


def _one_checkpoint(make_bert, text_dataset, run_args, minilm_tokenizer):
    args = run_args("run", max_steps=2, save_strategy="steps", save_steps=2)
    collator = DistillationDataCollator(minilm_tokenizer)
    _distil(make_bert(seed=2), make_bert(seed=1), args, text_dataset, collator)
    return args, collator, f"{args.output_dir}/checkpoint-2"


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
