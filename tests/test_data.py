import collections
import os

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, ViTConfig, default_data_collator

from kd_hf.config import DistillationConfig
from kd_hf.data import (
    TEACHER_PREFIX,
    DistillationDataCollator,
    default_image_processor,
    label_names,
    load_offline_dataset,
    load_raw_datasets,
    offline_model_path,
    prepare_datasets,
    preprocess_images,
    tokenize_for_pair,
    tokenizers_match,
)
from kd_hf.data.offline import _build_on_disk, _split_indices


MINILM = "offline:all-MiniLM-L6-v2"
REVIEWS = ["a quiet triumph", "dull and interminably overlong", "the cast is superb", "a mess", "warm funny and wise"]


def recipe(**fields) -> DistillationConfig:
    fields.setdefault("output_dir", "unused")
    return DistillationConfig(report_to=[], model_init="config", model_config={"model_type": "bert"}, **fields)


@pytest.fixture
def reviews_csv(tmp_path):
    """Reviews on disk, so that `map` results are cached to files as they are for real datasets."""
    path = tmp_path / "reviews.csv"
    datasets.Dataset.from_dict({"text": REVIEWS * 4, "label": [1, 0, 1, 0, 1] * 4}).to_csv(path, index=False)
    return datasets.load_dataset("csv", data_files=str(path), split="train")


def test_rotten_tomatoes_keeps_every_labelled_review_and_drops_plots():
    corpus = load_offline_dataset("rotten_tomatoes")
    assert set(corpus) == {"train", "validation", "test"}
    assert corpus["train"].features["label"].names == ["rotten", "fresh"]
    labels = collections.Counter(label for split in corpus.values() for label in split["label"])
    assert labels == {1: 7403, 0: 5405}
    assert {split: corpus[split].num_rows for split in corpus} == {"train": 10246, "validation": 1281, "test": 1281}
    assert all(isinstance(text, str) and text for text in corpus["validation"]["text"])


@pytest.mark.parametrize(
    ("name", "rows", "side"), [pytest.param("mnist", 5000, 28, marks=pytest.mark.slow), ("digits", 1797, 8)]
)
def test_offline_digit_corpora_are_grayscale_with_every_class_in_every_split(name, rows, side):
    corpus = load_offline_dataset(name)
    assert sum(split.num_rows for split in corpus.values()) == rows
    assert corpus["train"].features["label"].names == [str(digit) for digit in range(10)]
    image = corpus["validation"][0]["image"]
    assert image.mode == "L" and image.size == (side, side)
    assert np.asarray(image).max() > 200  # scaled to 0-255, not left at digits' 0-16
    for split in corpus.values():
        assert sorted(split.unique("label")) == list(range(10))


def test_offline_splits_are_disjoint_stratified_and_rebuilt_identically(tmp_path):
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    splits = _split_indices(labels)
    assert all(np.array_equal(splits[k], _split_indices(labels)[k]) for k in splits)
    assert sorted(np.concatenate(list(splits.values())).tolist()) == list(range(100))
    assert collections.Counter(labels[splits["test"]].tolist()) == {0: 5, 1: 3, 2: 2}

    rebuilt = datasets.load_from_disk(_build_on_disk("digits", str(tmp_path)))
    cached = load_offline_dataset("digits")
    for split in cached:
        assert rebuilt[split]["label"] == cached[split]["label"]
        assert rebuilt[split][:5]["image"][4].tobytes() == cached[split][:5]["image"][4].tobytes()


def test_unknown_offline_names_list_the_bundled_ones():
    with pytest.raises(ValueError, match="offline:mnist"):
        load_offline_dataset("imdb")
    with pytest.raises(ValueError, match="offline:all-MiniLM-L6-v2"):
        offline_model_path("offline:bert-base-uncased")


def test_offline_model_path_resolves_to_a_checkpoint_and_passes_other_names_through():
    assert os.path.isfile(os.path.join(offline_model_path(MINILM), "config.json"))
    assert offline_model_path("prajjwal1/bert-tiny") == "prajjwal1/bert-tiny"


def test_tokenizers_match_only_tokenizers_that_encode_alike(minilm_tokenizer, word_tokenizer):
    reloaded = AutoTokenizer.from_pretrained(offline_model_path(MINILM))
    reloaded("warm up the truncation state", truncation=True, max_length=8)
    assert tokenizers_match(minilm_tokenizer, reloaded)
    assert not tokenizers_match(minilm_tokenizer, word_tokenizer)


def test_tokenize_for_pair_with_the_same_tokenizer_adds_no_teacher_columns(reviews_csv, minilm_tokenizer):
    teacher = AutoTokenizer.from_pretrained(offline_model_path(MINILM))
    tokenized = tokenize_for_pair(reviews_csv, minilm_tokenizer, teacher, max_length=16)
    assert set(tokenized.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert tokenized[0]["input_ids"] == minilm_tokenizer(REVIEWS[0])["input_ids"]
    assert tokenized["labels"][:5] == [1, 0, 1, 0, 1]


def test_tokenize_for_pair_with_another_vocabulary_adds_the_teachers_own_encoding(
    reviews_csv, minilm_tokenizer, word_tokenizer
):
    tokenized = tokenize_for_pair(reviews_csv, minilm_tokenizer, word_tokenizer, max_length=16)
    teacher_columns = {c for c in tokenized.column_names if c.startswith(TEACHER_PREFIX)}
    # Word indices come with two tokenizers, so that attributions can be matched word by word.
    assert teacher_columns == {"teacher_input_ids", "teacher_attention_mask", "teacher_word_index"}
    assert "word_index" in tokenized.column_names
    assert tokenized[1]["teacher_input_ids"] == word_tokenizer(REVIEWS[1])["input_ids"]
    assert tokenized[1]["input_ids"] == minilm_tokenizer(REVIEWS[1])["input_ids"]


def test_tokenize_for_pair_encodes_two_columns_as_a_sentence_pair(minilm_tokenizer):
    pairs = datasets.Dataset.from_dict({"premise": ["a cat sat"], "hypothesis": ["an animal sat"], "label": [0]})
    tokenized = tokenize_for_pair(pairs, minilm_tokenizer, text_columns=["premise", "hypothesis"])
    assert tokenized[0]["input_ids"].count(minilm_tokenizer.sep_token_id) == 2
    assert 1 in tokenized[0]["token_type_ids"]


def test_second_tokenize_call_reads_the_datasets_cache(reviews_csv, minilm_tokenizer):
    first = tokenize_for_pair(reviews_csv, minilm_tokenizer, max_length=16)
    cache_file = first.cache_files[0]["filename"]
    written = os.stat(cache_file).st_mtime_ns
    second = tokenize_for_pair(reviews_csv, minilm_tokenizer, max_length=16)
    assert second.cache_files[0]["filename"] == cache_file
    assert os.stat(cache_file).st_mtime_ns == written


def test_collator_pads_student_and_teacher_to_their_own_lengths(reviews_csv, minilm_tokenizer, word_tokenizer):
    tokenized = tokenize_for_pair(reviews_csv, minilm_tokenizer, word_tokenizer, max_length=16)
    features = [tokenized[i] for i in range(5)]
    batch = DistillationDataCollator(minilm_tokenizer, word_tokenizer)(features)

    longest = max(len(f["input_ids"]) for f in features)
    teacher_longest = max(len(f["teacher_input_ids"]) for f in features)
    assert longest != teacher_longest  # word pieces vs whole words
    assert batch["input_ids"].shape == (5, longest)
    assert batch["teacher_input_ids"].shape == (5, teacher_longest)
    assert batch["input_ids"][3, -1] == minilm_tokenizer.pad_token_id  # MiniLM pads on the right
    assert batch["teacher_input_ids"][3, 0] == word_tokenizer.pad_token_id  # the word tokenizer on the left
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [1, 0, 1, 0, 1]


def test_collator_without_teacher_keys_needs_no_teacher_tokenizer(reviews_csv, minilm_tokenizer):
    tokenized = tokenize_for_pair(reviews_csv, minilm_tokenizer, max_length=16)
    batch = DistillationDataCollator(minilm_tokenizer, pad_to_multiple_of=8)([tokenized[0], tokenized[1]])
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape[1] % 8 == 0


def test_preprocess_images_gives_each_model_its_channels_and_size():
    images = load_offline_dataset("digits")["validation"].select(range(6))
    student = default_image_processor(ViTConfig(image_size=16, num_channels=1))
    teacher = default_image_processor(ViTConfig(image_size=(24, 20)))
    processed = preprocess_images(images, student, teacher, num_channels=1, teacher_num_channels=3)

    batch = default_data_collator([processed[i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 1, 16, 16)
    assert batch["teacher_pixel_values"].shape == (4, 3, 24, 20)
    assert batch["pixel_values"].dtype == torch.float32
    assert -1.0 <= batch["pixel_values"].min() < batch["pixel_values"].max() <= 1.0
    assert batch["labels"].tolist() == images["label"][:4]


def test_preprocess_images_shares_pixels_when_the_teacher_processes_alike():
    images = load_offline_dataset("digits")["validation"].select(range(2))
    processor = default_image_processor(ViTConfig(image_size=8, num_channels=3))
    processed = preprocess_images(images, processor, default_image_processor(ViTConfig(image_size=8)))
    assert set(processed.column_names) == {"pixel_values", "labels"}
    assert processed[0]["pixel_values"].shape == (3, 8, 8)


def test_missing_text_column_names_the_columns_and_the_recipe_field():
    with pytest.raises(ValueError, match=r"'sentence' not in the dataset .*columns: text, label.*`text_columns`"):
        load_raw_datasets(recipe(dataset_name="offline:rotten_tomatoes", text_columns=["sentence"]))
    with pytest.raises(ValueError, match="set `image_column: image`"):
        load_raw_datasets(recipe(dataset_name="offline:digits"))


def test_missing_split_names_the_splits_that_exist():
    with pytest.raises(ValueError, match=r"'training' not in the dataset \(splits: train, validation, test\)"):
        load_raw_datasets(recipe(dataset_name="offline:digits", image_column="image", train_split="training"))


def test_no_dataset_names_the_fields_to_set():
    with pytest.raises(ValueError, match="`dataset_name`.*`data_files`"):
        load_raw_datasets(recipe())


def test_csv_with_string_labels_is_encoded_in_name_order_and_split_stratified(tmp_path):
    path = tmp_path / "reviews.csv"
    sentiments = ["pos", "neg", "pos", "neutral", "pos"] * 8
    datasets.Dataset.from_dict({"review": [f"review {i}" for i in range(40)], "sentiment": sentiments}).to_csv(path)
    args = recipe(
        data_files={"train": str(path)}, text_columns=["review"], label_column="sentiment", eval_split_size=0.25
    )
    train, evaluation = load_raw_datasets(args)

    assert label_names(train, "sentiment") == ["neg", "neutral", "pos"]
    assert (train.num_rows, evaluation.num_rows) == (30, 10)
    assert collections.Counter(evaluation["sentiment"]) == {2: 6, 0: 2, 1: 2}
    assert set(train["review"]).isdisjoint(evaluation["review"])
    row = train[0]
    assert row["sentiment"] == ["neg", "neutral", "pos"].index(sentiments[int(row["review"].split()[1])])


def test_max_samples_keep_a_seeded_mix_of_classes():
    args = recipe(dataset_name="offline:rotten_tomatoes", max_train_samples=40, max_eval_samples=10, seed=3)
    train, evaluation = load_raw_datasets(args)
    again, _ = load_raw_datasets(args)
    assert (train.num_rows, evaluation.num_rows) == (40, 10)
    assert train["text"] == again["text"]
    assert set(train["label"]) == {0, 1}  # the files are sorted by label; a head would hold one class


def test_prepare_datasets_tokenizes_both_splits_with_named_labels(minilm_tokenizer):
    args = recipe(dataset_name="offline:rotten_tomatoes", max_train_samples=16, max_eval_samples=8, max_length=32)
    train, evaluation = prepare_datasets(args, minilm_tokenizer)
    assert (train.num_rows, evaluation.num_rows) == (16, 8)
    assert "text" not in train.column_names and "input_ids" in evaluation.column_names
    assert max(len(ids) for ids in train["input_ids"]) <= 32
    assert label_names(train) == ["rotten", "fresh"]


@pytest.mark.slow
def test_prepare_datasets_preprocesses_images_for_an_image_recipe():
    args = recipe(dataset_name="offline:mnist", image_column="image", max_train_samples=8, max_eval_samples=4)
    processor = default_image_processor(ViTConfig(image_size=28, num_channels=1))
    train, evaluation = prepare_datasets(args, processor, num_channels=1)
    assert train[0]["pixel_values"].shape == (1, 28, 28)
    assert evaluation.num_rows == 4 and label_names(evaluation) == [str(digit) for digit in range(10)]
