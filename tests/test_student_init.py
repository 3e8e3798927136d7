"""A student built from a config starts with the teacher's embeddings projected to its width (issue 14, lever 2)."""

import numpy as np
import pytest
import torch
import transformers
from sklearn.decomposition import PCA

from kd_hf import DistillationConfig
from kd_hf.pairing import student_from_teacher_layers
from kd_hf.student_init import narrow_teacher_layers, project_teacher_embeddings


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


@pytest.mark.slow
def test_a_student_of_another_type_reads_the_teachers_tokens_and_starts_from_its_embeddings(
    tiny_text_project, tmp_path, caplog
):
    """ALBERT's word table, narrower than its layers, under a BERT teacher: built from ALBERT's defaults, the teacher's
    vocabulary and positions, and the recipe's fields; trained and saved, it loads in plain transformers."""
    from kd_hf.cli import main

    albert = {"model_type": "albert", "embedding_size": 8, "hidden_size": 16, "num_hidden_layers": 2,
              "num_hidden_groups": 2, "num_attention_heads": 2, "intermediate_size": 32}  # fmt: skip
    recipe = tiny_text_project(model_init="config", model_config=albert, embedding_init="teacher", max_steps=2,
                               save_strategy="no", explanation_examples=0)  # fmt: skip
    with caplog.at_level("INFO", logger="kd_hf"):
        main(["distill", str(recipe)])

    assert "initialised from the teacher's, projected to 8 dimensions" in caplog.text
    student = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")
    teacher = transformers.AutoConfig.from_pretrained(tmp_path / "teacher")
    assert type(student).__name__ == "AlbertForSequenceClassification"
    assert student.albert.embeddings.word_embeddings.weight.shape == (teacher.vocab_size, 8)
    assert student.config.max_position_embeddings == teacher.max_position_embeddings  # the teacher's: 64, not 512
    assert (student.config.hidden_size, len(student.albert.encoder.albert_layer_groups)) == (16, 2)


def test_a_checkpoint_of_another_type_than_model_config_says_is_refused(tmp_path, make_bert):
    from kd_hf.pairing import build_student

    make_bert(layers=1).save_pretrained(tmp_path / "bert")
    config = DistillationConfig(output_dir=str(tmp_path / "out"), report_to=[], model_init="config",
                                model_name_or_path=str(tmp_path / "bert"), model_config={"model_type": "albert"})  # fmt: skip
    with pytest.raises(ValueError, match=r"`model_type: albert`.*keeps its type \(bert\)"):
        build_student(config, None, ["negative", "positive"])


# `narrow_teacher_layers`: teacher layers cut to a narrower student by the teacher's activations (Minitron).


def _token_batches(seed=0, batches=2):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (batches, 8, 12), generator=generator)
    return [{"input_ids": batch, "attention_mask": torch.ones_like(batch)} for batch in ids]


def test_narrowing_to_the_teachers_widths_is_the_copy_of_its_layers(make_bert):
    teacher = make_bert(layers=4, vocab_size=VOCAB)
    narrowed = narrow_teacher_layers(teacher, [1, 3], {}, _token_batches())
    copied = student_from_teacher_layers(teacher, [1, 3])
    for key, tensor in copied.state_dict().items():
        assert torch.equal(narrowed.state_dict()[key], tensor), key
    assert teacher.config.num_hidden_layers == 4  # the teacher is untouched


def test_neurons_that_never_fire_are_dropped_without_changing_the_function(make_bert):
    teacher = make_bert(layers=2, vocab_size=VOCAB)  # width 32, 2 heads of 16, 64 neurons per layer
    dead = torch.arange(0, 64, 2)
    with torch.no_grad():
        for layer in teacher.bert.encoder.layer:  # GELU(-30) = 0: half the neurons output nothing
            layer.intermediate.dense.weight[dead] = 0
            layer.intermediate.dense.bias[dead] = -30
    student = narrow_teacher_layers(teacher, [0, 1], {"intermediate_size": 32}, _token_batches())
    kept = student.bert.encoder.layer[0].intermediate.dense.bias
    torch.testing.assert_close(kept, teacher.bert.encoder.layer[0].intermediate.dense.bias[1::2])
    inputs = _token_batches(seed=1)[0]
    with torch.no_grad():
        torch.testing.assert_close(student(**inputs).logits, teacher(**inputs).logits, atol=1e-5, rtol=1e-5)


def test_the_most_active_channels_and_heads_are_kept(make_bert):
    teacher = make_bert(layers=2, heads=4, vocab_size=VOCAB)  # width 32, 4 heads of 8
    quiet = torch.arange(16, 32)
    with torch.no_grad():
        for module in teacher.modules():  # every LayerNorm outputs 0 on channels 16-31
            if isinstance(module, torch.nn.LayerNorm):
                module.weight[quiet], module.bias[quiet] = 0, 0
        for layer in teacher.bert.encoder.layer:  # heads 0 and 2 read nothing: their outputs are 0
            for head in (0, 2):
                layer.attention.self.value.weight[8 * head : 8 * head + 8] = 0
                layer.attention.self.value.bias[8 * head : 8 * head + 8] = 0
    student = narrow_teacher_layers(
        teacher, [1], {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 64}, _token_batches()
    )
    live_heads = torch.cat([torch.arange(8, 16), torch.arange(24, 32)])
    value = teacher.bert.encoder.layer[1].attention.self.value.weight
    assert torch.equal(student.bert.encoder.layer[0].attention.self.value.weight, value[live_heads][:, :16])
    words = teacher.bert.embeddings.word_embeddings.weight
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, words[:, :16])
    assert torch.equal(student.classifier.weight, teacher.classifier.weight[:, :16])
    assert student.config.hidden_size == 16 and student.config.num_hidden_layers == 1


def test_a_vit_is_narrowed_on_its_images(make_vit):
    teacher = make_vit(layers=4)  # width 32, 2 heads of 16, 64 neurons
    images = [{"pixel_values": torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))}]
    student = narrow_teacher_layers(
        teacher, [1, 3], {"hidden_size": 16, "num_attention_heads": 1, "intermediate_size": 32}, images
    )
    assert student.num_parameters() < teacher.num_parameters() / 2
    assert student(pixel_values=torch.randn(2, 1, 8, 8)).logits.shape == (2, 10)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hidden_size": 64, "num_attention_heads": 4}, "`hidden_size` 64 is above the teacher's 32"),
        ({"hidden_size": 16}, r"heads have 16 dimensions.*`hidden_size: 16` set `num_attention_heads: 1`"),
        ({"intermediate_size": 128}, "`intermediate_size` 128 is above the teacher's 64"),
    ],
)
def test_a_student_that_is_not_a_narrowing_is_refused_with_the_fix(make_bert, overrides, message):
    with pytest.raises(ValueError, match=message):
        narrow_teacher_layers(make_bert(vocab_size=VOCAB), [0], overrides, _token_batches())


@pytest.mark.slow
def test_distill_narrows_teacher_layers_to_the_recipes_width(tiny_text_project, tmp_path, caplog):
    from transformers import AutoModelForSequenceClassification

    from kd_hf.cli import main

    recipe = tiny_text_project(
        model_config={"hidden_size": 16, "num_attention_heads": 1, "intermediate_size": 32},
        max_steps=1, explanation_examples=0,
    )  # fmt: skip
    with caplog.at_level("INFO", logger="kd_hf"):
        main(["distill", str(recipe)])
    assert "narrowed to width 16, 1 heads, 32 neurons" in caplog.text
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")
    assert (student.config.hidden_size, student.config.num_hidden_layers) == (16, 1)
    card = (tmp_path / "student" / "README.md").read_text()
    narrowed = "hidden_size 16, num_attention_heads 1, intermediate_size 32"
    assert (
        f"| teacher layers copied | 1 |\n| teacher layers narrowed, by the teacher's activations, to | {narrowed} |"
        in card
    )


def _distilbert():
    config = transformers.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2)
    return transformers.DistilBertForSequenceClassification(config)


def _albert():  # its layers live under `albert_layer_groups.<i>.albert_layers.<j>`, shared across depth
    config = transformers.AlbertConfig(
        vocab_size=VOCAB, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64,
    )  # fmt: skip
    return transformers.AlbertForSequenceClassification(config)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_distilbert, "DistilBertConfig has no intermediate_size"),
        (_albert, "Cannot find the attention heads and feed-forward neurons of every layer of AlbertFor"),
    ],
)
def test_a_layout_narrowing_does_not_know_is_refused(make, message):
    with pytest.raises(ValueError, match=f"{message}.*model_init: config"):
        narrow_teacher_layers(make().eval(), [0], {"hidden_size": 16, "num_attention_heads": 1}, _token_batches())
