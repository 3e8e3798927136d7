import pytest
import torch

from kd_hf import DistillationConfig
from kd_hf.vocabulary import prune_tokenizer
from tests.conftest import sentiment_rows


TEXTS = sentiment_rows(32)["text"] + ["An unwatchable, interminably overlong mess."]


def test_the_texts_tokenize_into_the_same_pieces_renumbered(minilm_tokenizer):
    pruned, kept = prune_tokenizer(minilm_tokenizer, TEXTS)
    assert len(pruned) == len(kept) < len(minilm_tokenizer) // 5
    assert kept == sorted(kept)
    for text in TEXTS:
        assert [kept[i] for i in pruned(text)["input_ids"]] == minilm_tokenizer(text)["input_ids"]
    pair = pruned(TEXTS[0], TEXTS[1])
    assert [kept[i] for i in pair["input_ids"]] == minilm_tokenizer(TEXTS[0], TEXTS[1])["input_ids"]
    assert pair["token_type_ids"] == minilm_tokenizer(TEXTS[0], TEXTS[1])["token_type_ids"]
    for name in ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"):
        old = getattr(minilm_tokenizer, f"{name}_id")
        assert kept[getattr(pruned, f"{name}_id")] == old, name


def test_an_unseen_word_falls_back_to_kept_pieces_never_to_unknown(minilm_tokenizer):
    pruned, kept = prune_tokenizer(minilm_tokenizer, TEXTS)
    ids = pruned("Zygote xylophones!", add_special_tokens=False)["input_ids"]
    assert pruned.unk_token_id not in ids
    assert pruned.decode(ids) == "zygote xylophones!"
    assert [kept[i] for i in ids] != minilm_tokenizer("Zygote xylophones!", add_special_tokens=False)["input_ids"]


def test_the_pruned_tokenizer_saves_and_loads_with_auto_tokenizer(minilm_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    pruned, _ = prune_tokenizer(minilm_tokenizer, TEXTS)
    pruned.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    batch = [TEXTS[0], "Zygote xylophones!"]
    assert loaded(batch, padding=True)["input_ids"] == pruned(batch, padding=True)["input_ids"]
    assert loaded.pad_token_id == pruned.pad_token_id and len(loaded) == len(pruned)


def test_a_tokenizer_that_is_not_wordpiece_is_refused(word_tokenizer):
    with pytest.raises(ValueError, match="cuts WordPiece vocabularies.*WordLevel.*prune_vocabulary: false"):
        prune_tokenizer(word_tokenizer, TEXTS)


def test_the_recipe_field_is_for_text(tmp_path):
    with pytest.raises(ValueError, match="`prune_vocabulary` cuts a text vocabulary"):
        DistillationConfig(
            output_dir=str(tmp_path), report_to=[], prune_vocabulary=True, model_name_or_path="m",
            image_column="image", text_columns=[],
        )  # fmt: skip


@pytest.mark.slow
def test_a_pretrained_student_keeps_its_rows_of_the_kept_tokens(tiny_text_project, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kd_hf.cli import main

    main(["distill", str(tiny_text_project(prune_vocabulary=True, learning_rate=1e-9, explanation_examples=0))])
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")
    teacher = AutoModelForSequenceClassification.from_pretrained(tmp_path / "teacher")
    tokenizer, teacher_tokenizer = (AutoTokenizer.from_pretrained(tmp_path / name) for name in ("student", "teacher"))
    text = "a superb and moving film, smart cast"
    ids, teacher_ids = tokenizer(text)["input_ids"], teacher_tokenizer(text)["input_ids"]
    assert len(tokenizer) < len(teacher_tokenizer) // 5
    # `model_init: teacher_layers` copied the teacher's embeddings; the pruned table keeps their rows.
    torch.testing.assert_close(
        student.get_input_embeddings().weight[ids], teacher.get_input_embeddings().weight[teacher_ids]
    )


@pytest.mark.slow
def test_distill_with_a_pruned_vocabulary_saves_a_student_that_loads_and_reads_like_the_teacher(
    tiny_text_project, tmp_path
):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kd_hf.cli import main
    from kd_hf.student_init import embedding_projection

    recipe = tiny_text_project(
        model_init="config", model_config={"num_hidden_layers": 1, "hidden_size": 16, "intermediate_size": 32},
        prune_vocabulary=True, embedding_init="teacher", max_steps=2, learning_rate=1e-9,
        loss_type=["soft_label", "attribution"], loss_weights=[1.0, 0.5], attribution_method="integrated_gradients",
        attribution_n_steps=2, explanation_examples=4, card_examples=2,
    )  # fmt: skip
    main(["distill", str(recipe)])

    student_dir, teacher_dir = tmp_path / "student", tmp_path / "teacher"
    student = AutoModelForSequenceClassification.from_pretrained(student_dir)
    tokenizer, teacher_tokenizer = (
        AutoTokenizer.from_pretrained(student_dir),
        AutoTokenizer.from_pretrained(teacher_dir),
    )
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    words = student.get_input_embeddings().weight
    assert words.shape[0] == len(tokenizer) == student.config.vocab_size < len(teacher_tokenizer) // 5
    # Row i of the student's table started as the teacher's row of the same token, projected (a learning rate of
    # 1e-9 leaves it there).
    text = "a superb and moving film, smart cast"
    student_ids = tokenizer(text)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(student_ids) == teacher_tokenizer.convert_ids_to_tokens(
        teacher_tokenizer(text)["input_ids"]
    )
    teacher_words = teacher.get_input_embeddings().weight
    mean, projection = embedding_projection(teacher_words, 16)
    expected = (teacher_words[teacher_tokenizer(text)["input_ids"]].double() - mean) @ projection
    torch.testing.assert_close(words[student_ids].double(), expected, atol=1e-4, rtol=1e-3)
    card = (student_dir / "README.md").read_text()
    assert (student_dir / "eval_results.json").is_file()
    assert "student vocabulary pruned to the tokens of the training and evaluation texts" in card


@pytest.mark.slow
def test_kd_hf_train_prunes_the_vocabulary_of_a_model_built_from_a_config(tiny_text_project, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kd_hf.cli import main

    recipe = tiny_text_project(
        teacher_model_name_or_path=None, model_name_or_path=str(tmp_path / "teacher"), model_init="config",
        model_config={"num_hidden_layers": 1, "hidden_size": 16, "intermediate_size": 32}, prune_vocabulary=True,
    )  # fmt: skip
    main(["train", str(recipe)])
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "student")
    assert model.config.vocab_size == len(tokenizer) < 30522 // 5
    assert model(**tokenizer(["a superb film"], return_tensors="pt")).logits.shape == (1, 2)


@pytest.mark.slow
def test_distill_with_a_pruned_vocabulary_matches_attention_maps_and_hidden_states(tiny_text_project, tmp_path):
    import csv
    import json
    import math

    from transformers import AutoTokenizer

    from kd_hf.cli import main

    recipe = tiny_text_project(
        model_init="config", model_config={"num_hidden_layers": 1, "hidden_size": 16, "intermediate_size": 32},
        prune_vocabulary=True, embedding_init="teacher", loss_type=["soft_label", "attention", "hidden_state"],
        loss_weights=[1.0, 1.0, 1.0], layer_map="uniform", attention_heads="average", eval_strategy="steps",
        eval_steps=2, explanation_examples=0,
    )  # fmt: skip
    main(["distill", str(recipe)])

    state = json.loads((tmp_path / "student" / "checkpoint-4" / "trainer_state.json").read_text())
    trained = [row for row in state["log_history"] if "attention_loss" in row]
    evaluated = [row for row in state["log_history"] if "eval_attention_loss" in row]
    assert len(trained) == 4 and len(evaluated) == 2
    assert all(math.isfinite(row[name]) for row in trained for name in ("attention_loss", "hidden_state_loss"))
    # The validation texts were part of the cut: the student reads them in the teacher's pieces.
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "student")
    teacher_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "teacher")
    with open(tmp_path / "validation.csv") as file:
        texts = [row["text"] for row in csv.DictReader(file)]
    assert [tokenizer.tokenize(text) for text in texts] == [teacher_tokenizer.tokenize(text) for text in texts]
    assert len(tokenizer) < len(teacher_tokenizer) // 5
