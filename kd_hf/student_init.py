"""Start a narrower student from what its teacher knows: the teacher's embedding tables projected to its width, or
the teacher's own layers cut to it.

Most of a small text student's parameters are its word embeddings (30,522 × 128 of a 4.4M BERT), and a student built
from a config starts them at random. `project_teacher_embeddings` gives them the teacher's geometry instead: the
principal components of the teacher's word-embedding table (PCA, through an SVD of the centred table), with the
position and token-type tables mapped by the same projection, so that their sum (what the embedding LayerNorm sees)
is the projection of the teacher's sum. With equal widths the projection is a rotation, and keeps every distance.

```python
student = AutoModelForSequenceClassification.from_config(small_config)
project_teacher_embeddings(teacher, student)  # in place
```

`narrow_teacher_layers` goes further, as Minitron does (Muralidharan et al., 2024, https://huggingface.co/papers/2407.14679):
it keeps some of the teacher's layers and, in them, the residual channels, attention heads and feed-forward neurons
whose activations on a few training batches are largest, so every weight of the student starts as a slice of the
teacher's. With the teacher's widths it is DistilBERT's copy of teacher layers, exactly.

```python
student = narrow_teacher_layers(teacher, [1, 5], {"hidden_size": 128, "num_attention_heads": 4}, batches)
```
"""

import copy
import logging
import re
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn
from transformers import PreTrainedModel


logger = logging.getLogger(__name__)

# Embedding tables of a BERT-like encoder that are added together before its LayerNorm.
_ADDED_TABLES = ("word_embeddings", "position_embeddings", "token_type_embeddings")


def _embedding_tables(model: nn.Module) -> dict[str, nn.Embedding]:
    embeddings = getattr(model.base_model, "embeddings", None)
    return {
        name: table for name in _ADDED_TABLES if isinstance(table := getattr(embeddings, name, None), nn.Embedding)
    }


def embedding_projection(table: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean row of `table` and the `width` principal directions of its centred rows, as a (dim, width) matrix.

    `(table - mean) @ projection` keeps as much of the table's variance as `width` dimensions can. `width` must not
    exceed the table's dimension.
    """
    table = table.detach().double()
    if width > table.shape[1]:
        raise ValueError(f"Cannot project {table.shape[1]}-d embeddings to a wider {width}-d student.")
    mean = table.mean(0)
    _, _, directions = torch.linalg.svd(table - mean, full_matrices=False)
    return mean, directions[:width].T


@torch.no_grad()
def project_teacher_embeddings(
    teacher: nn.Module, student: nn.Module, token_ids: Sequence[int] | None = None
) -> list[str]:
    """Initialise the student's embedding tables (word, position, token type) from the teacher's, projected onto the
    principal components of the teacher's word embeddings; returns the names of the tables it set.

    Both models must read the same token ids (the teacher's tokenizer), or the student's word `i` must be the
    teacher's token `token_ids[i]` (a pruned vocabulary, `kd_hf.vocabulary`); a student table with fewer rows
    (positions) takes the teacher's first rows.
    """
    teacher_tables, student_tables = _embedding_tables(teacher), _embedding_tables(student)
    if "word_embeddings" not in teacher_tables or "word_embeddings" not in student_tables:
        raise ValueError(
            f"`embedding_init: teacher` needs BERT-like word embeddings in both models ({type(teacher).__name__}, "
            f"{type(student).__name__}); use `embedding_init: random`, or `model_init: teacher_layers`."
        )
    teacher_words, student_words = teacher_tables["word_embeddings"].weight, student_tables["word_embeddings"].weight
    rows_of = {"word_embeddings": list(token_ids)} if token_ids is not None else {}
    teacher_tokens = len(rows_of.get("word_embeddings", teacher_words))
    if teacher_tokens != student_words.shape[0]:
        raise ValueError(
            f"`embedding_init: teacher` maps token ids one to one, but the teacher has {teacher_tokens} and "
            f"the student {student_words.shape[0]}: give the student the teacher's tokenizer (`model_init: config` "
            "without `model_name_or_path`), or use `embedding_init: random`."
        )
    mean, projection = embedding_projection(teacher_words, student_words.shape[1])
    done = []
    for name, table in student_tables.items():
        source = teacher_tables.get(name)
        if source is None or source.weight.shape[0] < table.weight.shape[0]:
            continue
        rows = source.weight[rows_of.get(name, slice(table.weight.shape[0]))].double()
        centred = rows - mean if name == "word_embeddings" else rows
        table.weight.copy_((centred @ projection).to(table.weight.dtype))
        done.append(name)
    logger.info("Student embeddings %s initialised from the teacher's, projected to %d dimensions.", done,
                projection.shape[1])  # fmt: skip
    return done


# What a kept attention head, feed-forward neuron or residual channel indexes in a layer's weights, by module name:
# BERT / RoBERTa (`attention.self.query`, `attention.output.dense`, `intermediate.dense`, `output.dense`) and
# ViT / DeiT (`attention.q_proj`, `attention.o_proj`, `mlp.fc1`, `mlp.fc2`). Every other dimension of the teacher's
# width, outside these (embeddings, LayerNorms, pooler, head), is a residual channel.
_HEADS_OUT = re.compile(r"\.(query|key|value|q_proj|k_proj|v_proj)$")
_HEADS_IN = re.compile(r"\.(attention\.output\.dense|o_proj)$")
_NEURONS_OUT = re.compile(r"\.(intermediate\.dense|fc1)$")
_NEURONS_IN = re.compile(r"\.(\d+\.output\.dense|fc2)$")
_LAYER = re.compile(r"^(.*\.layers?\.)(\d+)(\..*)$")  # a block of an encoder: `...layer.<i>.` or `...layers.<i>.`
NARROWED_WIDTHS = ("hidden_size", "num_attention_heads", "intermediate_size")


def shallower_config(teacher_config, layers: Sequence[int], config_overrides: dict | None = None):
    """A copy of the teacher's config with `len(layers)` layers and `config_overrides` set."""
    config = copy.deepcopy(teacher_config)
    config.num_hidden_layers = len(layers)
    for key, value in (config_overrides or {}).items():
        setattr(config, key, value)
    return config


def teacher_layer_weights(teacher: nn.Module, layers: Sequence[int]) -> Iterator[tuple[str, str | None, torch.Tensor]]:
    """The teacher's weights a student of its `layers` keeps, as `(student key, student layer or None, tensor)`:
    the blocks under `...layer.<i>.` renumbered to the student's order, the other layers left out, every weight
    outside the blocks (embeddings, head) as it is."""
    new_index = {str(old): str(new) for new, old in enumerate(layers)}
    for key, tensor in teacher.state_dict().items():
        block = _LAYER.match(key)
        if block is None:
            yield key, None, tensor
        elif block.group(2) in new_index:
            layer = new_index[block.group(2)]
            yield f"{block.group(1)}{layer}{block.group(3)}", layer, tensor


def _head_size(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def narrowed_config(teacher_config, layers: Sequence[int], config_overrides: dict | None = None):
    """The teacher's config with `len(layers)` layers and `config_overrides`, checked to be a narrowing of it: no width
    above the teacher's, and heads of the teacher's size (a head is kept whole or not at all)."""
    unknown = [name for name in NARROWED_WIDTHS if not hasattr(teacher_config, name)]
    if unknown:
        raise ValueError(
            f"Narrowing teacher layers knows BERT-like and ViT-like configs; {type(teacher_config).__name__} has no "
            f"{', '.join(unknown)}. Keep the teacher's widths (`model_config` without them), or use `model_init: config`."
        )
    config = shallower_config(teacher_config, layers, config_overrides)
    for name in NARROWED_WIDTHS:
        if getattr(config, name) > getattr(teacher_config, name):
            raise ValueError(
                f"`model_init: teacher_layers` keeps a part of each teacher layer, but `{name}` "
                f"{getattr(config, name)} is above the teacher's {getattr(teacher_config, name)}; use at most the "
                "teacher's widths, or `model_init: config` for a wider student."
            )
    size = _head_size(teacher_config)
    if config.hidden_size != config.num_attention_heads * size:
        raise ValueError(
            f"The teacher's attention heads have {size} dimensions, and a narrowed student keeps whole heads: with "
            f"`hidden_size: {config.hidden_size}` set `num_attention_heads: {config.hidden_size // size}`, or with "
            f"`num_attention_heads: {config.num_attention_heads}` set `hidden_size: {config.num_attention_heads * size}`."
        )
    return config


@torch.no_grad()
def layer_importance(model: nn.Module, batches: Iterable[dict]) -> dict[str, torch.Tensor]:
    """Minitron's activation-based importance of `model`'s parts over `batches` (its forward inputs), averaged over
    the tokens or patches that are not padding:

    - `channels`: mean |output| of every LayerNorm, per residual channel, summed over the LayerNorms;
    - `heads`: mean L2 norm of each head's output (the attention's output projection reads them), `[layers, heads]`;
    - `neurons`: mean |activation| of each feed-forward neuron, `[layers, intermediate_size]`.
    """
    config = model.config
    size = _head_size(config)
    found = {"channels": torch.zeros(config.hidden_size, dtype=torch.float64)}
    found["heads"] = torch.zeros(config.num_hidden_layers, config.num_attention_heads, dtype=torch.float64)
    found["neurons"] = torch.zeros(config.num_hidden_layers, config.intermediate_size, dtype=torch.float64)
    mask = {}

    def mean_over_tokens(values: torch.Tensor) -> torch.Tensor:  # [batch, tokens, ...] -> [...]
        weights = mask.get("tokens")
        if weights is None or weights.shape != values.shape[:2]:
            return values.double().mean((0, 1))
        weights = weights.double().reshape(*weights.shape, *[1] * (values.dim() - 2))
        return (values.double() * weights).sum((0, 1)) / weights.sum()

    def add(key: str, layer: int | None, transform):
        def hook(module, inputs, output=None):
            values = transform(inputs[0] if output is None else output)
            target = found[key] if layer is None else found[key][layer]
            target += mean_over_tokens(values)

        return hook

    def per_head(values: torch.Tensor) -> torch.Tensor:
        return values.unflatten(-1, (-1, size)).norm(dim=-1)

    handles, seen = [], {"heads": [], "neurons": []}
    for name, module in model.named_modules():
        layer = _LAYER.match(name + ".")
        index = int(layer.group(2)) if layer else None
        if isinstance(module, nn.LayerNorm) and module.normalized_shape == (config.hidden_size,):
            handles.append(module.register_forward_hook(add("channels", None, torch.abs)))
        elif index is not None and _HEADS_IN.search(name):
            handles.append(module.register_forward_pre_hook(add("heads", index, per_head)))
            seen["heads"].append(index)
        elif index is not None and _NEURONS_IN.search(name):
            handles.append(module.register_forward_pre_hook(add("neurons", index, torch.abs)))
            seen["neurons"].append(index)
    if {len(set(layers)) for layers in seen.values()} != {config.num_hidden_layers}:
        for handle in handles:
            handle.remove()
        raise ValueError(
            f"Cannot find the attention heads and feed-forward neurons of every layer of {type(model).__name__}: "
            "narrowing teacher layers knows BERT-like and ViT-like layouts. Keep the teacher's widths, or use "
            "`model_init: config`."
        )
    try:
        for batch in batches:
            mask["tokens"] = batch.get("attention_mask")
            model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    return found


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return scores.topk(k).indices.sort().values


@torch.no_grad()
def narrow_teacher_layers(
    teacher: PreTrainedModel, layers: Sequence[int], config_overrides: dict | None, batches: Iterable[dict]
) -> PreTrainedModel:
    """A student made of the teacher's `layers`, cut to the widths `config_overrides` sets (`hidden_size`,
    `num_attention_heads`, `intermediate_size`), keeping the most important residual channels, and in each layer the
    most important heads and neurons, by `layer_importance` on `batches`; the teacher is left as it was.

    BERT-like and ViT-like encoders (see `_HEADS_OUT` and the patterns beside it); another layout is refused.
    """
    config = narrowed_config(teacher.config, layers, config_overrides)
    importance = layer_importance(teacher.eval(), batches)
    size = _head_size(teacher.config)
    channels = _top(importance["channels"], config.hidden_size)
    heads, neurons = {}, {}
    for new, old in enumerate(layers):
        kept_heads = _top(importance["heads"][old], config.num_attention_heads)
        heads[str(new)] = (kept_heads[:, None] * size + torch.arange(size)).flatten()
        neurons[str(new)] = _top(importance["neurons"][old], config.intermediate_size)

    student = type(teacher)(config)
    target = student.state_dict()
    state = {}
    for key, layer, tensor in teacher_layer_weights(teacher, layers):
        module = key.rsplit(".", 1)[0]
        if layer is not None and _HEADS_OUT.search(module):
            kept = [heads[layer], channels]
        elif layer is not None and _HEADS_IN.search(module):
            kept = [channels, heads[layer]]
        elif layer is not None and _NEURONS_OUT.search(module):
            kept = [neurons[layer], channels]
        elif layer is not None and _NEURONS_IN.search(module):
            kept = [channels, neurons[layer]]
        else:
            kept = [channels if length == teacher.config.hidden_size else None for length in tensor.shape]
        for dim, indices in enumerate(kept[: tensor.dim()]):
            if indices is not None:
                tensor = tensor.index_select(dim, indices)
        if key not in target or target[key].shape != tensor.shape:
            raise ValueError(
                f"Cannot narrow {type(teacher).__name__}: its weight {key!r} {tuple(tensor.shape)} does not fit the "
                f"student's {tuple(target[key].shape) if key in target else 'nothing'}. Narrowing knows BERT-like and "
                "ViT-like layers; keep the teacher's widths, or use `model_init: config`."
            )
        state[key] = tensor
    missing = sorted(set(target) - set(state))
    if missing:
        raise ValueError(f"Narrowing {type(teacher).__name__} left student weights unset: {missing[:5]}.")
    student.load_state_dict(state)
    logger.info(
        "Student of teacher layers %s narrowed to width %d, %d heads, %d neurons: %d parameters.",
        list(layers), config.hidden_size, config.num_attention_heads, config.intermediate_size,
        student.num_parameters(),
    )  # fmt: skip
    return student.to(torch.float32)
