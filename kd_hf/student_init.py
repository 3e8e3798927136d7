"""Start a narrower student from what its teacher knows: the teacher's embedding tables, projected to its width.

Most of a small text student's parameters are its word embeddings (30,522 × 128 of a 4.4M BERT), and a student built
from a config starts them at random. `project_teacher_embeddings` gives them the teacher's geometry instead: the
principal components of the teacher's word-embedding table (PCA, through an SVD of the centred table), with the
position and token-type tables mapped by the same projection, so that their sum (what the embedding LayerNorm sees)
is the projection of the teacher's sum. With equal widths the projection is a rotation, and keeps every distance.

```python
student = AutoModelForSequenceClassification.from_config(small_config)
project_teacher_embeddings(teacher, student)  # in place
```
"""

import logging
from collections.abc import Sequence

import torch
from torch import nn


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
