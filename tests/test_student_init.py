"""A student built from a config starts with the teacher's embeddings projected to its width (issue 14, lever 2)."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from kd_hf import DistillationConfig
from kd_hf.student_init import project_teacher_embeddings


VOCAB = 500


def _tables(model):
    embeddings = model.base_model.embeddings
    return embeddings.word_embeddings.weight, embeddings.position_embeddings.weight


def test_word_embeddings_are_the_teachers_principal_components(make_bert):
    teacher, student = make_bert(hidden=32, seed=1, vocab_size=VOCAB), make_bert(hidden=8, seed=2, vocab_size=VOCAB)
    assert project_teacher_embeddings(teacher, student) == [
        "word_embeddings", "position_embeddings", "token_type_embeddings",
    ]  # fmt: skip

    words = _tables(student)[0].detach().numpy()
    expected = PCA(n_components=8, svd_solver="full").fit_transform(_tables(teacher)[0].detach().double().numpy())
    assert words.shape == (VOCAB, 8)
    # Each principal direction is defined up to its sign.
    signs = np.sign((words * expected).sum(0))
    np.testing.assert_allclose(words, expected * signs, atol=1e-5)
    assert words.var(0)[0] > words.var(0)[-1]  # the first direction holds the most variance


def test_position_tables_follow_the_same_projection_so_that_sums_are_projected(make_bert):
    teacher, student = make_bert(hidden=32, seed=1, vocab_size=VOCAB), make_bert(hidden=8, seed=2, vocab_size=VOCAB)
    project_teacher_embeddings(teacher, student)
    (teacher_words, teacher_positions), (student_words, student_positions) = (
        [table.detach().double() for table in _tables(model)] for model in (teacher, student)
    )
    # The projection P, recovered from the word tables (500 rows, full rank): (words - mean) @ P = student words.
    projection = torch.linalg.lstsq(teacher_words - teacher_words.mean(0), student_words).solution
    torch.testing.assert_close(student_positions, teacher_positions @ projection, atol=1e-5, rtol=1e-5)
    # So the student's word + position is the projection of the teacher's word + position, centred.
    pair = teacher_words[7] + teacher_positions[3] - teacher_words.mean(0)
    torch.testing.assert_close(student_words[7] + student_positions[3], pair @ projection, atol=1e-5, rtol=1e-5)


def test_equal_widths_keep_every_distance(make_bert):
    teacher, student = make_bert(hidden=16, seed=1, vocab_size=VOCAB), make_bert(hidden=16, seed=2, vocab_size=VOCAB)
    project_teacher_embeddings(teacher, student)
    before, after = _tables(teacher)[0].double(), _tables(student)[0].double()
    torch.testing.assert_close(torch.cdist(after[:50], after[:50]), torch.cdist(before[:50], before[:50]))


def test_another_vocabulary_is_refused(make_bert):
    with pytest.raises(ValueError, match="maps token ids one to one.*500.*400.*teacher's tokenizer"):
        project_teacher_embeddings(make_bert(vocab_size=VOCAB), make_bert(hidden=8, vocab_size=400))


def test_a_wider_student_is_refused(make_bert):
    with pytest.raises(ValueError, match="wider"):
        project_teacher_embeddings(make_bert(hidden=8, vocab_size=VOCAB), make_bert(hidden=16, vocab_size=VOCAB))


@pytest.mark.parametrize(
    "fields",
    [
        {"model_init": "teacher_layers"},
        {"model_init": "config", "model_name_or_path": "prajjwal1/bert-tiny"},
        {"model_init": "checkpoint", "model_name_or_path": "prajjwal1/bert-tiny"},
    ],
)
def test_the_recipe_field_needs_a_student_built_from_the_teachers_config(tmp_path, fields):
    with pytest.raises(ValueError, match="`embedding_init: teacher`.*model_init: config"):
        DistillationConfig(
            output_dir=str(tmp_path), teacher_model_name_or_path="teacher", embedding_init="teacher", report_to=[],
            **fields,
        )  # fmt: skip


@pytest.mark.slow
def test_distill_starts_the_student_from_the_projected_embeddings(tiny_text_project, tmp_path, caplog):
    from kd_hf.cli import main

    recipe = tiny_text_project(
        model_init="config", model_config={"num_hidden_layers": 1, "hidden_size": 16, "intermediate_size": 32},
        embedding_init="teacher", max_steps=1, explanation_examples=0,
    )  # fmt: skip
    with caplog.at_level("INFO", logger="kd_hf"):
        main(["distill", str(recipe)])
    assert "initialised from the teacher's, projected to 16 dimensions" in caplog.text
