"""A mistyped recipe, flag, split or model config fails before any step, with one message that names the fix."""

import sys

import pytest

from kd_hf import DistillationConfig
from kd_hf.cli import main, parse_recipe
from kd_hf.data import load_raw_datasets
from kd_hf.pairing import build_student


def _recipe(tmp_path, text: str, name: str = "recipe.yaml") -> str:
    path = tmp_path / name
    path.write_text("model_name_or_path: m\n" + text)
    return str(path)


def _data(tmp_path) -> list[str]:
    """The `tiny_text_project` CSVs as `kd-hf eval` / `explain` data arguments."""
    files = [f"train={tmp_path / 'train.csv'}", f"validation={tmp_path / 'validation.csv'}"]
    return ["--dataset", "csv", "--data_files", *files, "--max_length", "32"]


# 12. A split that does not exist.


def test_eval_of_a_missing_split_names_the_splits_that_exist(tiny_text_project, tmp_path):
    model = str(tmp_path / "teacher")
    with pytest.raises(ValueError, match=r"split 'tset' not in the dataset \(splits: train, validation\).*`--split`"):
        main(["eval", model, "--teacher", model, *_data(tmp_path), "--split", "tset",
              "--output_dir", str(tmp_path / "out")])  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_explain_of_a_missing_split_names_the_splits_that_exist(tiny_text_project, tmp_path):
    model = str(tmp_path / "teacher")
    files = _data(tmp_path)[:-2]  # explain takes no --max_length
    with pytest.raises(ValueError, match=r"split 'nosuch' not in the dataset \(splits: train, validation\)"):
        main(["explain", model, "--teacher", model, *files, "--split", "nosuch", "--output_dir", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def test_a_recipe_eval_split_that_does_not_exist_is_an_error(tiny_text_project, tmp_path):
    config = parse_recipe([str(tiny_text_project(eval_split="tset"))])
    with pytest.raises(ValueError, match=r"split 'tset' not in the dataset.*set `eval_split`"):
        load_raw_datasets(config)


def test_a_missing_validation_split_is_still_held_out_of_train(tiny_text_project, tmp_path):
    config = parse_recipe([str(tiny_text_project(data_files={"train": str(tmp_path / "train.csv")}))])
    train, evaluation = load_raw_datasets(config)
    assert (train.num_rows, evaluation.num_rows) == (28, 4)


# 13. `model_config` keys that the student's config does not have.


@pytest.fixture
def bert_folder(tmp_path, make_bert):
    make_bert(layers=2, seed=1).save_pretrained(tmp_path / "bert")
    return str(tmp_path / "bert")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model_init": "config", "model_config": {"hiden_size": 16}}, r"`hiden_size`.*did you mean `hidden_size`"),
        (
            {"model_init": "checkpoint", "model_config": {"num_hiden_layers": 1}},
            r"`num_hiden_layers`.*did you mean `num_hidden_layers`",
        ),
        (
            {"model_init": "teacher_layers", "model_config": {"hidden_dropout": 0.2}},
            r"`hidden_dropout`.*did you mean `hidden_dropout_prob`",
        ),
        (
            {"model_init": "config", "model_config": {"model_type": "vit"}},
            r"`model_type: vit`.*no text classification model.*drop `model_type` to keep the teacher's \(bert\)",
        ),
        (
            {"model_init": "config", "model_config": {"model_type": "albert", "embeding_size": 8}},
            r"`embeding_size`.*AlbertConfig.*did you mean `embedding_size`",
        ),
        (
            {"model_init": "config", "teacher_model_name_or_path": None, "model_config": {"model_type": "vitt"}},
            r"`model_type: vitt`.*did you mean `vit`",
        ),
        (
            {
                "model_init": "config",
                "teacher_model_name_or_path": None,
                "model_config": {"model_type": "bert", "hiden_size": 16},
            },
            r"`hiden_size`.*did you mean `hidden_size`",
        ),
    ],
)
def test_unknown_model_config_keys_are_named_with_a_suggestion(tmp_path, make_bert, bert_folder, fields, message):
    fields = {"teacher_model_name_or_path": bert_folder, "model_name_or_path": bert_folder, **fields}
    if fields["model_init"] != "checkpoint":
        fields["model_name_or_path"] = None
    config = DistillationConfig(output_dir=str(tmp_path / "out"), report_to=[], **fields)
    with pytest.raises(ValueError, match=message):
        build_student(config, make_bert(layers=2, seed=1), ["negative", "positive"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hidden_size": 16}, r"`hidden_size` 32 -> 16 of the checkpoint .*`model_init: teacher_layers`"),
        ({"num_attention_heads": 4}, r"`num_attention_heads` 2 -> 4"),
    ],
)
def test_a_checkpoint_resized_by_model_config_is_refused_with_the_inits_that_can(
    tmp_path, make_bert, bert_folder, overrides, message
):
    config = DistillationConfig(
        output_dir=str(tmp_path / "out"), report_to=[], teacher_model_name_or_path=bert_folder,
        model_name_or_path=bert_folder, model_init="checkpoint", model_config=overrides,
    )  # fmt: skip
    with pytest.raises(ValueError, match=message):
        build_student(config, make_bert(layers=2, seed=1), ["negative", "positive"])


def test_a_checkpoint_keeps_model_config_values_that_fit_its_weights(tmp_path, make_bert, bert_folder):
    config = DistillationConfig(
        output_dir=str(tmp_path / "out"), report_to=[], teacher_model_name_or_path=bert_folder,
        model_name_or_path=bert_folder, model_init="checkpoint",
        model_config={"hidden_size": 32, "num_hidden_layers": 1, "hidden_dropout_prob": 0.2},
    )  # fmt: skip
    student = build_student(config, make_bert(layers=2, seed=1), ["negative", "positive"])
    assert (student.config.num_hidden_layers, student.config.hidden_dropout_prob) == (1, 0.2)


def test_distill_with_a_mistyped_model_config_fails_before_training(tiny_text_project, tmp_path):
    recipe = tiny_text_project(model_init="config", model_config={"num_hidden_layers": 1, "hiden_size": 16})
    with pytest.raises(ValueError, match=r"`model_config`.*`hiden_size`.*did you mean `hidden_size`"):
        main(["distill", str(recipe)])
    saved = [path.name for path in (tmp_path / "student").glob("*") if path.name != "kd_hf_recipe.json"]
    assert saved == []  # no checkpoint, no model: nothing trained


# 15. Messages that said too little, or the wrong thing.


def test_a_scalar_is_read_as_a_one_item_list(tmp_path):
    config = parse_recipe([_recipe(tmp_path, "loss_type: soft_label\ntext_columns: review\nteacher_layers: 3\n")])
    assert (config.loss_type, config.text_columns, config.teacher_layers) == (["soft_label"], ["review"], [3])


@pytest.mark.parametrize(
    ("line", "message"), [("alpha: null", r"`alpha` cannot be null.*in \[0, 1\]"), ("max_steps: ~", "`max_steps`")]
)
def test_null_for_a_number_names_the_field_and_its_range(tmp_path, line, message):
    with pytest.raises(SystemExit, match=message):
        parse_recipe([_recipe(tmp_path, line + "\n")])


def test_unknown_command_line_flag_suggests_the_right_one(tmp_path):
    with pytest.raises(SystemExit, match=r"unknown flag `--temprature`; did you mean `--temperature`"):
        parse_recipe([_recipe(tmp_path, ""), "--max_steps", "2", "--temprature", "3"])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("temperature: hot", r"`temperature: hot` is not a number.*Softmax temperature"),
        ("max_steps: 2.5", r"`max_steps: 2.5` is not an integer"),
        ("use_cpu: maybe", r"`use_cpu: maybe` is not true or false"),
        ("loss_weights: [1.0, heavy]", r"`loss_weights: \[1.0, 'heavy'\]` is not a list of numbers"),
    ],
)
def test_a_yaml_type_error_names_the_key_and_the_file(tmp_path, line, message):
    path = _recipe(tmp_path, line + "\n")
    with pytest.raises(SystemExit, match=f"Recipe '{path}': {message}") as error:
        parse_recipe([path])
    assert "--" not in str(error.value)


def test_a_recipe_folder_is_rejected_clearly(tmp_path):
    with pytest.raises(SystemExit, match=r"is a folder, not a recipe.*recipes/offline_text.yaml"):
        parse_recipe([str(tmp_path)])


def test_a_recipe_that_is_not_yaml_is_rejected_clearly(tmp_path):
    with pytest.raises(SystemExit, match=r"is not valid YAML.*line 2"):
        parse_recipe([_recipe(tmp_path, "alpha: [0.5\n")])


def test_an_empty_split_is_named(tiny_text_project, tmp_path):
    (tmp_path / "empty.csv").write_text("text,label\n")
    config = parse_recipe([str(tiny_text_project(data_files={"train": str(tmp_path / "train.csv"),
                                                              "validation": str(tmp_path / "empty.csv")}))])  # fmt: skip
    with pytest.raises(ValueError, match=r"split 'validation' has no examples"):
        load_raw_datasets(config)


def test_a_split_left_empty_after_loading_is_named(tiny_text_project, monkeypatch):
    import datasets

    from kd_hf.data import loading

    rows = {"text": ["a good film"], "label": ["positive"]}
    empty = datasets.DatasetDict(
        train=datasets.Dataset.from_dict(rows), validation=datasets.Dataset.from_dict(rows).select([])
    )
    monkeypatch.setattr(loading, "_load_dict", lambda args: empty)
    with pytest.raises(ValueError, match=r"split 'validation' has no examples \(0 rows; splits: train, validation\)"):
        load_raw_datasets(parse_recipe([str(tiny_text_project())]))


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "student", "--dataset", "offline:rotten_tomatoes", "--max_eval_samples", "0"],
        ["explain", "student", "--teacher", "teacher", "--dataset", "offline:rotten_tomatoes", "-n", "0"],
    ],
)
def test_zero_examples_to_evaluate_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as error:
        main(argv)
    assert error.value.code != 0
    assert "must be >= 1, got 0" in capsys.readouterr().err


def test_a_recipe_that_keeps_zero_examples_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"`max_eval_samples` must be >= 1"):
        parse_recipe([_recipe(tmp_path, "max_eval_samples: 0\n")])


def test_the_console_command_prints_one_line_without_a_traceback(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["kd-hf", "distill", _recipe(tmp_path, "temperature: 0\n")])
    with pytest.raises(SystemExit) as error:
        main()
    message = error.value.code
    assert isinstance(message, str) and "\n" not in message  # Python prints it alone and exits with status 1
    assert message.startswith("kd-hf distill: `temperature` must be > 0")
