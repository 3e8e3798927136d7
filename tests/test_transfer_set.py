"""Transfer sets: unlabelled texts added to the training split, learning from the teacher's soft labels alone."""

import datasets
import pytest

from kd_hf import DistillationConfig
from kd_hf.data import add_transfer_set, load_offline_dataset


def _args(tmp_path, **fields):
    return DistillationConfig(output_dir=str(tmp_path / "out"), model_name_or_path="m", report_to=[], **fields)


@pytest.fixture
def train():
    rows = {"text": ["a fine film", "a dull film"], "label": [1, 0], "id": [7, 8]}
    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["neg", "pos"]),
            "id": datasets.Value("int64"),
        }
    )
    return datasets.Dataset.from_dict(rows, features=features)


def test_the_transfer_texts_follow_the_training_rows_unlabelled(tmp_path, train):
    (tmp_path / "more.csv").write_text('review,stars\n"an odd, long film",3\n"",4\nquiet and warm,5\n')
    args = _args(tmp_path, transfer_data_files=str(tmp_path / "more.csv"), text_columns=["review"])
    renamed = train.rename_column("text", "review")
    combined = add_transfer_set(renamed, args)
    assert combined["review"] == ["a fine film", "a dull film", "an odd, long film", "quiet and warm"]  # empty dropped
    assert combined["label"] == [1, 0, -100, -100]  # their own columns (stars) are not labels
    assert combined.column_names == ["review", "label"]


def test_max_transfer_samples_keeps_one_sample_whatever_the_seed(tmp_path, train):
    texts = [f"film number {i}" for i in range(10)]
    (tmp_path / "more.csv").write_text("text\n" + "\n".join(texts))
    kept = [
        add_transfer_set(train, _args(tmp_path, transfer_data_files=str(tmp_path / "more.csv"), max_transfer_samples=4,
                                      seed=seed))["text"]
        for seed in (1, 2)
    ]  # fmt: skip
    assert kept[0] == kept[1]  # runs with other seeds share the teacher's cached soft labels on it
    assert kept[0][:2] == ["a fine film", "a dull film"] and len(kept[0]) == 6
    assert set(kept[0][2:]) <= set(texts) and kept[0][2:] != texts[:4]  # a sample, not the file's head
    with pytest.raises(ValueError, match="max_transfer_samples"):
        _args(tmp_path, transfer_data_files=str(tmp_path / "more.csv"), max_transfer_samples=0)


def test_a_transfer_set_without_the_text_column_or_split_is_refused(tmp_path, train):
    (tmp_path / "more.csv").write_text("body\nsome text\n")
    with pytest.raises(ValueError, match=r"no column \['text'\] \(columns: body\).*rename its text column"):
        add_transfer_set(train, _args(tmp_path, transfer_data_files=str(tmp_path / "more.csv")))
    args = _args(tmp_path, transfer_data_files=str(tmp_path / "more.csv"), transfer_split="unlabelled")
    with pytest.raises(
        ValueError, match=r"split 'unlabelled' not in the transfer set .*\(splits: train\).*transfer_split"
    ):
        add_transfer_set(train, args)


def test_the_offline_plot_summaries_are_one_unlabelled_split():
    plots = load_offline_dataset("rotten_tomatoes_plots")
    assert list(plots) == ["train"] and plots["train"].column_names == ["text"]
    assert plots["train"].num_rows == 1083 and all(text.strip() for text in plots["train"]["text"])


def test_the_offline_imdb_sentences_are_unlabelled_and_apart_from_every_critic_snippet():
    import re

    sentences = load_offline_dataset("imdb_sentences")
    assert list(sentences) == ["train"] and sentences["train"].column_names == ["text"]
    texts = sentences["train"]["text"]
    assert len(texts) > 250_000 and len(set(texts)) == len(texts)
    assert all(4 <= len(text.split()) <= 50 and "<br" not in text for text in texts)
    assert texts[1].startswith("I also heard that at first it was seized by U.S. customs")  # split after "1967."

    def comparable(text):
        return re.sub(r"[^a-z0-9]+", "", text.lower())

    snippets = {
        comparable(text) for split in load_offline_dataset("rotten_tomatoes").values() for text in split["text"]
    }
    assert not snippets & {comparable(text) for text in texts}  # nothing of the test split leaks into training


def test_a_transfer_set_is_for_texts_and_for_distillation(tmp_path, tiny_text_project):
    from kd_hf.cli import main

    with pytest.raises(ValueError, match="A transfer set .* adds texts; leave it out for images"):
        _args(tmp_path, transfer_dataset_name="offline:rotten_tomatoes_plots", image_column="image", text_columns=[])
    recipe = tiny_text_project(
        teacher_model_name_or_path=None, model_name_or_path=str(tmp_path / "teacher"), model_init="checkpoint",
        transfer_dataset_name="offline:rotten_tomatoes_plots",
    )  # fmt: skip
    with pytest.raises(ValueError, match="`kd-hf train` has no teacher. Use `kd-hf distill`"):
        main(["train", str(recipe)])


@pytest.mark.slow
def test_distill_learns_on_the_transfer_set_and_a_second_run_reuses_the_teachers_cache(
    tiny_text_project, tmp_path, caplog, monkeypatch
):
    from kd_hf import teacher_cache
    from kd_hf.cli import main

    (tmp_path / "more.csv").write_text("text\n" + "\n".join(f"a {w} and quiet film" for w in ("warm", "wise", "flat")))
    fields = dict(transfer_data_files=str(tmp_path / "more.csv"), teacher_cache=True, max_steps=2)
    fields |= dict(explanation_examples=0, overwrite_output_dir=True)
    with caplog.at_level("INFO", logger="kd_hf"):
        main(["distill", str(tiny_text_project(**fields))])
    assert "Training on 32 examples and 3 unlabelled ones" in caplog.text
    card = (tmp_path / "student" / "README.md").read_text()
    assert "transfer set files" in card and "more.csv" in card

    computed = []
    original = teacher_cache.model_inputs
    monkeypatch.setattr(teacher_cache, "model_inputs", lambda *a, **k: computed.append(1) or original(*a, **k))
    main(["distill", str(tiny_text_project(**fields))])
    assert computed == []  # the teacher's logits on the 35 texts (and the eval set) came from the cache
