import logging

import pytest
import torch

from kd_hf.models import _hub_load_message, load_model
from kd_hf.pairing import (
    align_labels,
    resolve_model_path,
    student_from_teacher_layers,
    teacher_layer_indices,
)


def test_same_labels_in_the_same_order_need_no_reordering(make_bert):
    assert align_labels(make_bert().config, make_bert(seed=1).config) is None


def test_same_labels_in_another_order_are_realigned(make_bert):
    teacher = make_bert(labels=("pos", "neu", "neg")).config
    student = make_bert(labels=("neg", "pos", "neu")).config
    order = align_labels(teacher, student)
    teacher_logits = torch.tensor([[10.0, 20.0, 30.0]])  # pos, neu, neg
    assert teacher_logits[:, order].tolist() == [[30.0, 10.0, 20.0]]  # neg, pos, neu


def test_label_names_are_compared_case_insensitively(make_bert):
    assert align_labels(make_bert(labels=("NEGATIVE", "POSITIVE")).config, make_bert().config) is None


def test_different_label_counts_name_both_lists_and_the_fix(make_bert):
    teacher = make_bert(labels=("neg", "neu", "pos")).config
    student = make_bert(labels=("neg", "pos")).config
    with pytest.raises(ValueError, match=r"3 labels \['neg', 'neu', 'pos'\].*2 \['neg', 'pos'\].*label_mapping"):
        align_labels(teacher, student)


def test_different_label_names_raise(make_bert):
    with pytest.raises(ValueError, match=r"\['cat', 'dog'\] differ from the student's \['negative', 'positive'\]"):
        align_labels(make_bert(labels=("cat", "dog")).config, make_bert().config)


def test_label_mapping_renames_teacher_labels(make_bert):
    teacher = make_bert(labels=("LABEL_0", "LABEL_1")).config
    order = align_labels(teacher, make_bert().config, {"LABEL_0": "positive", "LABEL_1": "negative"})
    assert order == [1, 0]


def test_generic_teacher_labels_keep_their_order_with_a_warning(make_bert, caplog):
    with caplog.at_level(logging.WARNING, logger="kd_hf"):
        assert align_labels(make_bert(labels=("LABEL_0", "LABEL_1")).config, make_bert().config) is None
    assert "label_mapping" in caplog.text


@pytest.mark.parametrize(
    ("layers", "stride", "expected"), [(12, 3, [2, 5, 8, 11]), (6, 3, [2, 5]), (6, 2, [1, 3, 5]), (4, 1, [0, 1, 2, 3])]
)
def test_teacher_layer_indices_take_every_kth_layer(layers, stride, expected):
    assert teacher_layer_indices(layers, stride) == expected


def test_teacher_layer_indices_reject_layers_the_teacher_lacks():
    with pytest.raises(ValueError, match=r"pick indices in \[0, 5\]"):
        teacher_layer_indices(6, layers=[0, 6])
    with pytest.raises(ValueError, match="teacher_layers_stride"):
        teacher_layer_indices(2, stride=3)


def test_student_from_teacher_layers_copies_the_chosen_layers(make_bert):
    teacher = make_bert(layers=4)
    student = student_from_teacher_layers(teacher, [1, 3])
    assert student.config.num_hidden_layers == 2
    t, s = teacher.state_dict(), student.state_dict()
    for new, old in enumerate([1, 3]):
        key = "bert.encoder.layer.{}.attention.self.query.weight"
        assert torch.equal(s[key.format(new)], t[key.format(old)])
    assert torch.equal(s["bert.embeddings.word_embeddings.weight"], t["bert.embeddings.word_embeddings.weight"])
    assert torch.equal(s["classifier.weight"], t["classifier.weight"])
    assert teacher.config.num_hidden_layers == 4  # the teacher is untouched


def test_student_from_teacher_layers_works_for_vit(make_vit):
    teacher = make_vit(layers=4)
    student = student_from_teacher_layers(teacher, [3])
    key = "vit.layers.0.attention.q_proj.weight"
    assert torch.equal(student.state_dict()[key], teacher.state_dict()["vit.layers.3.attention.q_proj.weight"])
    assert student(pixel_values=torch.randn(2, 1, 8, 8)).logits.shape == (2, 10)


def test_missing_local_model_path_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*Hub id"):
        resolve_model_path(str(tmp_path / "no-such-model"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model_path("outputs/not/trained-yet")


def test_a_hub_id_that_cannot_be_loaded_is_named_with_the_fix(monkeypatch):
    """Offline (as the tests run), a Hub id absent from the cache fails naming it and how to fetch it; online, how to
    check it."""
    with pytest.raises(
        OSError, match=r"(?s)Cannot load the model 'nobody/no-such-model'.*`hf download nobody/no-such"
    ):
        load_model("nobody/no-such-model")
    monkeypatch.setattr("kd_hf.models.hub_constants.HF_HUB_OFFLINE", False)
    message = _hub_load_message("nobody/no-such-model", OSError("404"))
    assert "404" in message and "hf auth login" in message and "hf download" not in message


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_model_path(str(tmp_path))


def test_hub_ids_and_offline_aliases_pass_through():
    assert resolve_model_path("google-bert/bert-base-uncased") == "google-bert/bert-base-uncased"
    assert resolve_model_path("offline:all-MiniLM-L6-v2").endswith("model")
