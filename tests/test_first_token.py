"""The last layer of a [CLS] classifier run for its first token alone (`kd_hf.explain.first_token`): the same logits
and input gradients as the full model, for each architecture it knows, and nothing changed anywhere else."""

import logging
import threading

import torch
from conftest import assert_switch_keeps_explanations
from transformers import (
    AlbertConfig,
    AlbertForSequenceClassification,
    DeiTConfig,
    DeiTForImageClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from kd_hf.explain import first_token
from kd_hf.explain.first_token import first_token_last_layer


TEXT_SIZES = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3)  # fmt: skip


def _text_models(make_bert):
    torch.manual_seed(0)
    return [
        make_bert(seed=1),
        RobertaForSequenceClassification(RobertaConfig(**TEXT_SIZES, pad_token_id=1)).eval(),
        ElectraForSequenceClassification(ElectraConfig(**TEXT_SIZES, embedding_size=16)).eval(),
    ]


def _image_models(make_vit):
    torch.manual_seed(0)
    deit = DeiTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=2, intermediate_size=64, num_labels=10)  # fmt: skip
    return [make_vit(seed=2), DeiTForImageClassification(deit).eval()]


def _run(model, name, values, **inputs):
    """The logits, their first column's gradient with respect to `values`, and the shape of the last layer's
    output."""
    shapes = []
    hook = first_token._last_layer(model).register_forward_hook(lambda m, args, output: shapes.append(output.shape))
    values = values.clone().requires_grad_(True)
    try:
        logits = model(**{name: values}, **inputs).logits
    finally:
        hook.remove()
    (gradient,) = torch.autograd.grad(logits[:, 0].sum(), values)
    return logits.detach(), gradient, shapes[-1]


def test_text_classifiers_give_the_same_logits_and_gradients(make_bert):
    for model in _text_models(make_bert):
        torch.manual_seed(5)
        embeddings = model.get_input_embeddings()(torch.randint(5, 99, (3, 7)))
        mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4])  # padding: the mask's first row is used
        *expected, shape = _run(model, "inputs_embeds", embeddings, attention_mask=mask)
        with first_token_last_layer(model):
            *shortened, shortened_shape = _run(model, "inputs_embeds", embeddings, attention_mask=mask)
        assert shape == (3, 7, 32) and shortened_shape == (3, 1, 32)  # the last layer ran for the first token alone
        for a, b in zip(shortened, expected):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        assert "forward" not in vars(first_token._last_layer(model))  # the layer is whole again after the context


def test_image_classifiers_give_the_same_logits_and_gradients(make_vit):
    pixels = torch.randn(4, 1, 8, 8)
    for model in _image_models(make_vit):
        *expected, _ = _run(model, "pixel_values", pixels)
        with first_token_last_layer(model):
            *shortened, shape = _run(model, "pixel_values", pixels)
        assert shape == (4, 1, 32)
        for a, b in zip(shortened, expected):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_explanations_are_the_same_with_the_first_token_alone(monkeypatch, make_bert, make_vit, minilm_tokenizer):
    assert_switch_keeps_explanations(
        monkeypatch, "KD_HF_FIRST_TOKEN_LAYER", (None, "0"), make_bert(seed=3), make_vit(seed=3), minilm_tokenizer
    )


def test_other_models_the_switch_and_other_threads_run_the_full_layer(monkeypatch, make_bert):
    torch.manual_seed(0)
    albert = AlbertForSequenceClassification(AlbertConfig(**TEXT_SIZES, embedding_size=16)).eval()
    eager = make_bert(seed=1)
    eager.set_attn_implementation("eager")  # its attention weights may be asked for
    assert first_token._last_layer(albert) is None and first_token._last_layer(eager) is None

    bert = make_bert(seed=1)
    layer, ids = first_token._last_layer(bert), torch.randint(5, 99, (2, 6))
    monkeypatch.setenv("KD_HF_FIRST_TOKEN_LAYER", "0")
    with first_token_last_layer(bert):
        assert "forward" not in vars(layer)
    monkeypatch.delenv("KD_HF_FIRST_TOKEN_LAYER")

    shapes = {}

    def elsewhere():  # the shortcut is the calling thread's: another thread's hidden states stay whole
        shapes["other thread"] = bert(input_ids=ids, output_hidden_states=True).hidden_states[-1].shape

    with first_token_last_layer(bert), first_token_last_layer(bert):  # nested: the layer is patched once
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
        shapes["this thread"] = bert(input_ids=ids, output_hidden_states=True).hidden_states[-1].shape
    assert shapes == {"other thread": (2, 6, 32), "this thread": (2, 1, 32)}
    assert "forward" not in vars(layer)


def test_a_shortcut_that_differs_from_the_full_layer_is_not_used(monkeypatch, make_bert, caplog):
    bert = make_bert(seed=4)
    correct = first_token.LAYERS["BertLayer"]

    def wrong(layer, hidden_states, attention_mask):  # as if the model's code had changed under kd_hf
        return correct(layer, hidden_states, attention_mask) + 1.0

    monkeypatch.setitem(first_token.LAYERS, "BertLayer", wrong)
    ids = torch.randint(5, 99, (2, 6))
    with torch.no_grad():
        expected = bert(input_ids=ids).logits
        with caplog.at_level(logging.WARNING, logger="kd_hf.explain.first_token"), first_token_last_layer(bert):
            first, again = bert(input_ids=ids).logits, bert(input_ids=ids).logits
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(again, expected)  # checked once, then left whole
    assert "differs from the full layer" in caplog.text
