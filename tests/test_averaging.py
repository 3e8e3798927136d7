"""`weight_averaging_steps`: a run ends with the mean of its last weights, resumes with it, and refuses what would
undo it."""

import logging
import os

import pytest
import torch
from test_resume import StopAt
from transformers import AutoModelForImageClassification

from kd_hf import DistillationConfig
from kd_hf.averaging import WEIGHT_AVERAGE_NAME, averaged_steps
from kd_hf.run import train


VIT = dict(model_type="vit", image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=2,
           num_attention_heads=2, intermediate_size=32)  # fmt: skip


def _recipe(tmp_path, output_dir, **fields):
    """`kd-hf train` of a tiny ViT on 24 digits, a checkpoint after every step."""
    return DistillationConfig(
        output_dir=str(tmp_path / output_dir), model_init="config", model_config=VIT, dataset_name="offline:digits",
        image_column="image", max_train_samples=24, max_eval_samples=8, per_device_train_batch_size=8,
        per_device_eval_batch_size=8, learning_rate=1e-2, lr_scheduler_type="constant", save_strategy="steps",
        save_steps=1, use_cpu=True, seed=0, report_to=[], disable_tqdm=True, **fields,
    )  # fmt: skip


def _checkpoint(tmp_path, output_dir, step) -> dict[str, torch.Tensor]:
    """A checkpoint's weights under the model's names (transformers renames ViT's saved ones as it loads them)."""
    folder = os.path.join(tmp_path, output_dir, f"checkpoint-{step}")
    return AutoModelForImageClassification.from_pretrained(folder).state_dict()


def _mean(states: list[dict]) -> dict[str, torch.Tensor]:
    return {key: sum(state[key] for state in states) / len(states) for key in states[0]}


def _assert_close(expected: dict, model) -> None:
    actual = model.state_dict()
    far = [key for key in expected if not torch.allclose(expected[key], actual[key], rtol=0, atol=1e-6)]
    assert not far, f"{len(far)} of {len(expected)} tensors differ from the expected average: {far[:4]}"


def test_the_averaged_steps_count_back_from_the_last():
    assert averaged_steps(6000, 1000, 250) == [5250, 5500, 5750, 6000]
    assert averaged_steps(6, 4, 2) == [4, 6]
    assert averaged_steps(6, 4, 2, until=5) == [4]
    assert averaged_steps(3, 10, 1) == [1, 2, 3]  # a window longer than the run averages the whole run


@pytest.mark.slow
def test_the_run_ends_with_the_mean_of_its_last_weights(tmp_path):
    trainer = train(_recipe(tmp_path, "run", max_steps=6, weight_averaging_steps=4, weight_averaging_interval=2))

    expected = _mean([_checkpoint(tmp_path, "run", step) for step in (4, 6)])
    last = _checkpoint(tmp_path, "run", 6)
    assert any(not torch.equal(last[key], expected[key]) for key in last)  # the average is not the last weights
    _assert_close(expected, trainer.model)
    saved = AutoModelForImageClassification.from_pretrained(tmp_path / "run").state_dict()
    assert all(torch.equal(saved[key], trainer.model.state_dict()[key]) for key in expected)
    # The running average is in the checkpoints of the window, not before it.
    kept = [step for step in range(1, 7) if (tmp_path / "run" / f"checkpoint-{step}" / WEIGHT_AVERAGE_NAME).is_file()]
    assert kept == [4, 5, 6]
    # The final evaluation is the average's, not the last weights'.
    logged = trainer.state.log_history[-1]["eval_loss"]
    assert logged == pytest.approx(trainer.evaluate()["eval_loss"], abs=1e-6)
    trainer.model.load_state_dict(last)
    assert logged != pytest.approx(trainer.evaluate()["eval_loss"], abs=1e-6)


@pytest.mark.slow
def test_an_interrupted_run_resumes_its_average(tmp_path):
    fields = dict(max_steps=6, weight_averaging_steps=4)
    straight = train(_recipe(tmp_path, "straight", **fields))
    train(_recipe(tmp_path, "interrupted", **fields), callbacks=[StopAt(4)])
    resumed = train(_recipe(tmp_path, "interrupted", **fields))  # from checkpoint-4, halfway through the window

    assert resumed.state.global_step == 6
    straight_weights = straight.model.state_dict()
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(value, straight_weights[key]), key
    _assert_close(_mean([_checkpoint(tmp_path, "straight", step) for step in (3, 4, 5, 6)]), resumed.model)


@pytest.mark.slow
def test_an_extended_run_restarts_its_average_and_says_so(tmp_path, caplog):
    train(_recipe(tmp_path, "run", max_steps=4, weight_averaging_steps=2))
    with caplog.at_level(logging.WARNING, logger="kd_hf.averaging"):
        extended = train(_recipe(tmp_path, "run", max_steps=6, weight_averaging_steps=2))  # the window moves to 5, 6

    assert "holds steps [3, 4], but this run of 6 steps averages [] up to step 4" in caplog.text
    _assert_close(_mean([_checkpoint(tmp_path, "run", step) for step in (5, 6)]), extended.model)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(weight_averaging_steps=-1), "`weight_averaging_steps` must be >= 0"),
        (dict(weight_averaging_steps=10, weight_averaging_interval=0), "`weight_averaging_interval` must be >= 1"),
        (
            dict(weight_averaging_steps=10, load_best_model_at_end=True, eval_strategy="steps", save_strategy="steps"),
            "set only one",
        ),
    ],
)
def test_weight_averaging_settings_are_checked(tmp_path, fields, message):
    with pytest.raises(ValueError, match=message):
        DistillationConfig(output_dir=str(tmp_path), teacher_model_name_or_path="teacher", **fields)
