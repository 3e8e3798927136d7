import copy

import pytest
import torch

from kd_hf import DistillationTrainer
from kd_hf.explain import gradient_attribution
from kd_hf.losses.attribution import attribution_distance


def _text_inputs(tokenizer):
    batch = tokenizer(["a great and moving film", "dull"], padding=True, return_tensors="pt")
    return dict(batch)


@pytest.mark.parametrize("kind", ["cosine", "l1", "l2"])
def test_attribution_distance_is_zero_for_equal_and_positive_for_different(kind):
    a = torch.randn(3, 7)
    assert torch.allclose(attribution_distance(a, a.clone(), kind=kind), torch.zeros(3), atol=1e-6)
    assert (attribution_distance(a, torch.randn(3, 7), kind=kind) > 0).all()


def test_attribution_distance_ignores_padding():
    a, b = torch.randn(2, 5), torch.randn(2, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    noisy_a, noisy_b = a.clone(), b.clone()
    noisy_a[0, 3:], noisy_b[0, 3:] = 100.0, -100.0  # whatever sits at padded positions
    assert torch.allclose(attribution_distance(a, b, mask), attribution_distance(noisy_a, noisy_b, mask))


def test_l2_form_matches_hand_computation():
    student, teacher = torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0]])
    # normalised: (0.6, 0.8) vs (1, 0) -> (0.4^2 + 0.8^2)
    assert attribution_distance(student, teacher, kind="l2").item() == pytest.approx(0.8)


def test_text_input_x_gradient_matches_captum(make_bert, minilm_tokenizer):
    from captum.attr import LayerGradientXActivation

    model = make_bert(seed=3)
    inputs = _text_inputs(minilm_tokenizer)
    target = torch.tensor([1, 0])

    ours, outputs = gradient_attribution(model, inputs, target, create_graph=True)

    def forward(input_ids, attention_mask):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    explainer = LayerGradientXActivation(forward, model.get_input_embeddings())
    theirs = explainer.attribute(
        inputs["input_ids"], target=target, additional_forward_args=(inputs["attention_mask"],)
    )
    assert torch.allclose(ours, theirs.sum(-1), atol=1e-6)
    assert ours.requires_grad  # part of the graph: trainable
    assert outputs.logits.shape == (2, 2)


@pytest.mark.parametrize(
    ("method", "captum_class"), [("input_x_gradient", "InputXGradient"), ("gradient", "Saliency")]
)
def test_pixel_attributions_match_captum(make_vit, method, captum_class):
    import captum.attr

    model = make_vit(seed=3)
    pixels = torch.randn(2, 1, 8, 8)
    target = torch.tensor([4, 7])
    ours, _ = gradient_attribution(model, {"pixel_values": pixels}, target, method)
    theirs = getattr(captum.attr, captum_class)(lambda x: model(pixel_values=x).logits).attribute(
        pixels, target=target
    )
    expected = theirs.sum(1) if method == "input_x_gradient" else theirs.amax(1)
    assert torch.allclose(ours, expected, atol=1e-6)


@pytest.mark.parametrize("n_steps", [4, 8])
def test_few_step_text_integrated_gradients_match_captum_at_the_same_steps(make_bert, minilm_tokenizer, n_steps):
    from kd_hf.explain.text import _token_scores

    model = make_bert(seed=3)
    inputs = _text_inputs(minilm_tokenizer)
    target = torch.tensor([1, 0])
    special = torch.tensor(
        [minilm_tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True) for ids in inputs["input_ids"]]
    )
    theirs, _ = _token_scores(model, inputs, target, "integrated_gradients", n_steps, None, special)  # captum's

    ours, outputs = gradient_attribution(
        model, inputs, target, "integrated_gradients", create_graph=True, n_steps=n_steps,
        special_ids=minilm_tokenizer.all_special_ids,
    )  # fmt: skip
    torch.testing.assert_close(ours, theirs.to(ours.dtype), atol=1e-5, rtol=1e-4)
    assert ours.requires_grad  # trainable through
    torch.testing.assert_close(outputs.logits, model(**inputs).logits)  # the real inputs' outputs, same pass


def test_few_step_pixel_integrated_gradients_match_captum(make_vit):
    from captum.attr import IntegratedGradients

    model = make_vit(seed=3)
    pixels = torch.randn(2, 1, 8, 8)
    target = torch.tensor([4, 7])
    ours, outputs = gradient_attribution(model, {"pixel_values": pixels}, target, "integrated_gradients", n_steps=4)
    theirs = IntegratedGradients(lambda x: model(pixel_values=x).logits).attribute(pixels, target=target, n_steps=4)
    torch.testing.assert_close(ours, theirs.sum(1), atol=1e-5, rtol=1e-4)
    assert outputs.logits.shape == (2, 10)


@pytest.mark.parametrize("method", ["input_x_gradient", "gradient", "integrated_gradients"])
def test_attributing_the_first_rows_gives_their_attributions_and_every_rows_outputs(
    make_bert, minilm_tokenizer, method
):
    model = make_bert(seed=3)
    texts = ["a great and moving film", "dull", "not bad at all", "the cast is wasted here"]
    inputs = dict(minilm_tokenizer(texts, padding=True, return_tensors="pt"))
    target = torch.tensor([1, 0, 1, 0])
    settings = {"n_steps": 4, "special_ids": minilm_tokenizer.all_special_ids}

    everything, full_outputs = gradient_attribution(model, inputs, target, method, **settings)
    first, outputs = gradient_attribution(model, inputs, target, method, create_graph=True, rows=2, **settings)
    assert first.shape == (2, everything.shape[1]) and first.requires_grad
    torch.testing.assert_close(first, everything[:2], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(outputs.logits, full_outputs.logits, atol=1e-5, rtol=1e-4)  # all four rows


def test_pixel_integrated_gradients_of_the_first_rows(make_vit):
    model = make_vit(seed=3)
    pixels, target = torch.randn(3, 1, 8, 8), torch.tensor([4, 7, 1])
    everything, _ = gradient_attribution(model, {"pixel_values": pixels}, target, "integrated_gradients", n_steps=4)
    first, outputs = gradient_attribution(
        model, {"pixel_values": pixels}, target, "integrated_gradients", n_steps=4, rows=1
    )
    torch.testing.assert_close(first, everything[:1], atol=1e-5, rtol=1e-4)
    assert outputs.logits.shape == (3, 10)


def _trainer(student, teacher, args, **kwargs):
    return DistillationTrainer(model=student, teacher_model=teacher, args=args, **kwargs)


@pytest.mark.parametrize("method", ["input_x_gradient", "integrated_gradients"])
def test_attribution_loss_is_zero_for_a_copy_and_trains_only_the_student(
    make_bert, minilm_tokenizer, distill_args, method
):
    teacher = make_bert(seed=1)
    args = distill_args(loss_type=["attribution"], alpha=0.0, attribution_method=method, attribution_n_steps=4)
    batch = {**_text_inputs(minilm_tokenizer), "labels": torch.tensor([1, 0])}

    copy_trainer = _trainer(copy.deepcopy(teacher), teacher, args, processing_class=minilm_tokenizer)
    copy_trainer.model.train()
    assert copy_trainer.compute_loss(copy_trainer.model, batch).item() == pytest.approx(0.0, abs=1e-6)

    student = make_bert(seed=2)
    trainer = _trainer(student, teacher, args, processing_class=minilm_tokenizer)
    student.train()
    loss = trainer.compute_loss(student, batch)
    loss.backward()
    assert loss.item() > 0
    # The double backward reaches weights that only act through the attribution's gradient path.
    assert student.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert student.classifier.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.slow
def test_attribution_every_n_steps(make_bert, text_dataset, distill_args, minilm_tokenizer):
    from kd_hf.data import DistillationDataCollator

    args = distill_args(loss_type=["soft_label", "attribution"], attribution_every=2, max_steps=4)
    trainer = _trainer(
        make_bert(seed=2), make_bert(seed=1), args, train_dataset=text_dataset[0],
        data_collator=DistillationDataCollator(minilm_tokenizer),
    )  # fmt: skip
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert ["attribution_loss" in log for log in logs] == [True, False, True, False]
    assert all("soft_label_loss" in log for log in logs)


@pytest.mark.parametrize("teacher_cache", [False, True])
def test_attribution_batch_size_matches_the_first_rows_and_scales_to_the_batch(
    make_bert, text_dataset, distill_args, minilm_tokenizer, teacher_cache
):
    from kd_hf.data import DistillationDataCollator

    teacher = make_bert(seed=1)
    settings = {"loss_type": ["attribution"], "alpha": 0.0, "attribution_method": "integrated_gradients"}
    settings |= {"attribution_n_steps": 2, "teacher_cache": teacher_cache, "per_device_train_batch_size": 4}
    collator = DistillationDataCollator(minilm_tokenizer)

    def trainer_with(**fields):
        trainer = _trainer(
            make_bert(seed=2), teacher, distill_args(**settings, **fields), train_dataset=text_dataset[0],
            processing_class=minilm_tokenizer, data_collator=collator,
        )  # fmt: skip
        trainer.model.train()
        return trainer

    first_two, whole = trainer_with(attribution_batch_size=2), trainer_with()
    batch = next(iter(first_two.get_train_dataloader()))
    assert len(batch["input_ids"]) == 4 and ("teacher_attributions" in batch) == teacher_cache
    loss = first_two.compute_loss(first_two.model, batch)
    loss.backward()
    # Attributions of two rows, with the loss scaled to the batch of four: the same loss (a mean over examples) as
    # the whole batch's trainer gets on those two rows alone.
    two = whole.compute_loss(whole.model, {name: value[:2] for name, value in batch.items()})
    assert loss.item() == pytest.approx(two.item(), rel=1e-4) and loss.item() > 0
    logged = first_two._metrics["train"]["attribution_loss"][-1]
    torch.testing.assert_close(logged, whole._metrics["train"]["attribution_loss"][-1])
    assert first_two.model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_cached_teacher_integrated_gradients_are_the_explainers(
    make_bert, text_dataset, distill_args, minilm_tokenizer
):
    from kd_hf.data import DistillationDataCollator
    from kd_hf.explain import explain_text

    teacher = make_bert(seed=1)
    args = distill_args(
        loss_type=["soft_label", "attribution"], attribution_method="integrated_gradients", attribution_n_steps=8,
        teacher_cache=True,
    )  # fmt: skip
    trainer = _trainer(
        make_bert(seed=2), teacher, args, train_dataset=text_dataset[0], processing_class=minilm_tokenizer,
        data_collator=DistillationDataCollator(minilm_tokenizer),
    )  # fmt: skip
    row = trainer.train_dataset[0]
    text = minilm_tokenizer.decode(row["input_ids"], skip_special_tokens=True)
    [explanation] = explain_text(teacher, minilm_tokenizer, [text], method="integrated_gradients", n_steps=8)
    # The cache holds one score per token; the explainer sums sub-words into words and drops [CLS] and [SEP].
    tokens = torch.tensor(row["teacher_attributions"])[1:-1]
    assert len(explanation.scores) == len(tokens)  # a text of whole words: one token each
    torch.testing.assert_close(torch.tensor(explanation.scores, dtype=tokens.dtype), tokens, atol=1e-5, rtol=1e-4)


def test_cnn_teacher_and_vit_student_match_in_pixel_space(make_vit, distill_args):
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    teacher = ResNetForImageClassification(
        ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=10)
    ).eval()
    teacher.config.id2label = {i: str(i) for i in range(10)}
    teacher.config.label2id = {str(i): i for i in range(10)}
    student = make_vit(seed=2).train()
    args = distill_args(loss_type=["soft_label", "attribution"], image_column="image", text_columns=[])
    trainer = _trainer(student, teacher, args)
    loss = trainer.compute_loss(student, {"pixel_values": torch.randn(3, 1, 8, 8), "labels": torch.tensor([0, 1, 2])})
    loss.backward()
    assert torch.isfinite(loss) and trainer._metrics["train"]["attribution_loss"][-1] > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_tokens_are_summed_into_words():
    from kd_hf.losses.attribution import to_words

    scores = torch.tensor([[9.0, 1.0, 2.0, 3.0, 9.0]])
    index = torch.tensor([[-1, 0, 0, 2, -1]])  # [CLS] un ##watch able... word 1 lost to truncation
    words, present = to_words(scores, index, 3)
    assert words.tolist() == [[3.0, 0.0, 3.0]] and present.tolist() == [[True, False, True]]


def test_word_indices_line_up_across_tokenizers(minilm_tokenizer, word_tokenizer):
    import datasets

    from kd_hf.data import tokenize_for_pair

    rows = datasets.Dataset.from_dict({"text": ["a superb film, smart cast"], "label": [1]})
    encoded = tokenize_for_pair(rows, word_tokenizer, teacher_tokenizer=minilm_tokenizer)[0]

    def words(ids, index, tokenizer):
        merged = {}
        for token, word in zip(tokenizer.convert_ids_to_tokens(ids), index):
            if word >= 0:
                merged.setdefault(word, []).append(token)
        return merged

    student = words(encoded["input_ids"], encoded["word_index"], word_tokenizer)
    teacher = words(encoded["teacher_input_ids"], encoded["teacher_word_index"], minilm_tokenizer)
    assert student == {0: ["a"], 1: ["superb"], 2: ["film", ","], 3: ["smart"], 4: ["cast"]}
    assert set(teacher) == set(student) and teacher[2] == ["film", ","]


@pytest.mark.slow
def test_attribution_loss_across_tokenizers_matches_words(make_bert, distill_args, minilm_tokenizer, word_tokenizer):
    import datasets

    from kd_hf.data import DistillationDataCollator, tokenize_for_pair
    from tests.conftest import sentiment_rows

    train = tokenize_for_pair(
        datasets.Dataset.from_dict(sentiment_rows(16)), word_tokenizer, teacher_tokenizer=minilm_tokenizer
    )
    student = make_bert(seed=2, vocab_size=len(word_tokenizer))
    args = distill_args(loss_type=["soft_label", "attribution"], max_steps=2)
    trainer = _trainer(
        student, make_bert(seed=1), args, train_dataset=train,
        data_collator=DistillationDataCollator(word_tokenizer, teacher_tokenizer=minilm_tokenizer),
    )  # fmt: skip
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert all(0 < log["attribution_loss"] <= 2 for log in logs)

    args = distill_args(loss_type=["soft_label", "attribution"])
    with pytest.raises(ValueError, match="word by word.*tokenize_for_pair"):
        _trainer(student, make_bert(seed=1), args, train_dataset=train.remove_columns(["word_index"]))
