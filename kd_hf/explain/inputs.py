"""What every explainer attributes: a batch as continuous inputs (token embeddings or pixels) with its baseline.

Text is attributed at the output of the model's input embeddings (what captum's `Layer*` methods on that layer
compute), so that one explainer serves `explain_text` and the robustness measures, which perturb those embeddings.
"""

from dataclasses import dataclass, field, replace

import torch

from .first_token import first_token_last_layer


# The one baseline of every method that compares with one (integrated gradients, occlusion), in words for reports.
TEXT_BASELINE = "special tokens kept, every other token [PAD]"
IMAGE_BASELINE = "all-zero pixels (the mean image)"


@dataclass(frozen=True)
class AttributionInputs:
    """One batch as an explainer sees it, text or image.

    Attributes:
        model (`PreTrainedModel`): the classifier.
        values (`torch.Tensor`): what attributions are taken at: token embeddings `[batch, tokens, hidden]` or pixels
            `[batch, channels, height, width]`.
        baseline (`torch.Tensor`): the same shape: the embeddings of the text with every token but the special ones
            replaced by padding (`[CLS] [PAD] ... [SEP]`), or zero pixels (the mean image after normalisation).
        features (`torch.Tensor`): the unit of each position, broadcastable to `values`: its word `[batch, tokens, 1]`
            (1, 2, ... in reading order; 0 for special tokens, padding and a pair's second text), or its patch-grid
            cell `[batch, 1, height, width]`.
        forward_args (`dict[str, torch.Tensor]`, *optional*): the model's other inputs (`attention_mask`, ...).
        n_steps (`int`, *optional*, defaults to 32): integration steps, for the methods that take them.
        internal_batch_size (`int`, *optional*): rows per forward pass of the methods that run many (integrated
            gradients' interpolation points, occlusion's occluded copies).
        logits (`torch.Tensor`, *optional*): the model's logits on `values`, where the caller has them already (its
            pass for the predicted class), so that integrated gradients' convergence delta need not run it again.
    """

    model: torch.nn.Module
    values: torch.Tensor
    baseline: torch.Tensor
    features: torch.Tensor
    forward_args: dict = field(default_factory=dict)
    n_steps: int = 32
    internal_batch_size: int | None = None
    logits: torch.Tensor | None = None

    @property
    def image(self) -> bool:
        return self.values.dim() == 4

    @property
    def additional_args(self) -> tuple | None:
        """`forward_args` as captum's `additional_forward_args`, which it repeats alongside expanded inputs."""
        return tuple(self.forward_args.values()) or None

    def forward(self, values: torch.Tensor, *additional) -> torch.Tensor:
        """The logits of `values` (captum's forward function), with the last layer run for the first token alone
        where only that token reaches the logits (`kd_hf.explain.first_token`)."""
        name = "pixel_values" if self.image else "inputs_embeds"
        with first_token_last_layer(self.model):
            return self.model(**{name: values}, **dict(zip(self.forward_args, additional))).logits

    def endpoint_logits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits on `values` (`logits` where given) and on `baseline`, without gradients. Baselines that are all
        the same (zero pixels; texts of one length) run as one row."""
        with torch.no_grad():
            end = self.logits if self.logits is not None else self.forward(self.values, *self.forward_args.values())
            rows = [self.baseline, *self.forward_args.values()]
            if all(torch.equal(row, row[:1].expand_as(row)) for row in rows):
                start = self.forward(*(row[:1] for row in rows)).expand_as(end)
            else:
                start = self.forward(*rows)
        return end, start

    def outputs(self, **kwargs):
        """The model's outputs on `values` (e.g. `output_attentions=True`)."""
        name = "pixel_values" if self.image else "inputs_embeds"
        return self.model(**{name: self.values}, **self.forward_args, **kwargs)

    def repeat(self, times: int) -> "AttributionInputs":
        """Each example `times` times in a row (`repeat_interleave`), as captum expands perturbed inputs."""

        def expand(value):
            return value.repeat_interleave(times, 0)

        return replace(
            self, values=expand(self.values), baseline=expand(self.baseline), features=expand(self.features),
            forward_args={name: expand(value) for name, value in self.forward_args.items()},
            logits=None if self.logits is None else expand(self.logits),
        )  # fmt: skip


def word_features(input_ids: torch.Tensor, special_tokens_mask: torch.Tensor, encodings=None) -> torch.Tensor:
    """The word of each token, `[batch, tokens, 1]`: 1, 2, ... in the order of `kd_hf.explain.merge_words` (the first
    text's words; 0 for the rest). Without the tokenizer's `encodings`, each non-special token is its own word."""
    if encodings is None:
        return (torch.cumsum(~special_tokens_mask.bool(), -1) * ~special_tokens_mask.bool())[..., None]
    features = torch.zeros_like(input_ids)
    for row, encoding in enumerate(encodings):
        words = {}
        for position, word_id in enumerate(encoding.word_ids):
            if word_id is not None and encoding.sequence_ids[position] == 0:
                features[row, position] = words.setdefault(word_id, len(words) + 1)
    return features[..., None]


def text_inputs(model, batch: dict, special_tokens_mask: torch.Tensor | None = None, encodings=None, **options):
    """`AttributionInputs` of a tokenised `batch` (`input_ids`, `attention_mask`, ...); `special_tokens_mask` marks
    the tokens its baseline keeps, `encodings` (the tokenizer's) the words that occlusion replaces together."""
    input_ids = batch["input_ids"]
    special = special_tokens_mask.bool() if special_tokens_mask is not None else torch.zeros_like(input_ids).bool()
    embeddings = model.get_input_embeddings()
    with torch.no_grad():
        values = embeddings(input_ids)
        baseline = embeddings(torch.where(special, input_ids, model.config.pad_token_id or 0))
    return AttributionInputs(
        model, values.requires_grad_(True), baseline, word_features(input_ids, special, encodings),
        {name: value for name, value in batch.items() if name != "input_ids"}, **options,
    )  # fmt: skip


def grid_cells(height: int, width: int, grid_size: int) -> torch.Tensor:
    """The patch-grid cell of each pixel, `[height, width]`: row-major indices of a `grid_size` x `grid_size` grid."""
    rows = torch.arange(height) * grid_size // height
    columns = torch.arange(width) * grid_size // width
    return rows[:, None] * grid_size + columns[None, :]


def image_inputs(model, pixels: torch.Tensor, grid_size: int, **options) -> AttributionInputs:
    """`AttributionInputs` of preprocessed `pixels`, their cells on a `grid_size` x `grid_size` patch grid."""
    cells = grid_cells(*pixels.shape[-2:], grid_size).to(pixels.device)
    features = cells.expand(len(pixels), 1, *cells.shape)
    values = pixels if pixels.requires_grad else pixels.detach().requires_grad_(True)  # keeps captum from warning
    return AttributionInputs(model, values, torch.zeros_like(pixels), features, **options)
