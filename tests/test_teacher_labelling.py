"""`benchmarks/teacher_labelling.py`: its two orders label the same texts alike, and only the cache's order runs fewer
padded tokens."""

import pathlib

import numpy as np
import pytest

from kd_hf.data import DistillationDataCollator


@pytest.fixture
def labelling(monkeypatch):
    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parents[1] / "benchmarks"))
    import teacher_labelling

    return teacher_labelling


def test_row_order_and_shortest_first_give_the_same_logits_for_fewer_tokens(
    labelling, make_bert, text_dataset, minilm_tokenizer
):
    tokens = [name for name in text_dataset[0].column_names if name != "labels"]
    texts = text_dataset[0].map(lambda row, i: {k: row[k][: 3 + i * 5 % 8] for k in tokens}, with_indices=True)
    teacher, collator = make_bert(seed=1), DistillationDataCollator(minilm_tokenizer)

    _, in_row_order, row_logits = labelling.label(texts, teacher, collator, batch_size=8, by_length=False)
    _, by_length, sorted_logits = labelling.label(texts, teacher, collator, batch_size=8, by_length=True)

    lengths = [len(ids) for ids in texts["input_ids"]]
    assert in_row_order == sum(8 * max(lengths[i : i + 8]) for i in range(0, len(lengths), 8))
    assert by_length == sum(8 * max(sorted(lengths)[i : i + 8]) for i in range(0, len(lengths), 8)) < in_row_order
    assert np.allclose(list(sorted_logits), list(row_logits), atol=1e-5)
