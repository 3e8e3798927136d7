"""Surrogate rules: a shallow decision tree fitted to a model's predictions on interpretable features.

A global surrogate (Craven & Shavlik, 1996, "Extracting tree-structured representations of trained networks";
Molnar, "Interpretable Machine Learning", ch. "Global Surrogate") imitates the model, not the labels: it is trained
on one part of a sample against the model's predictions and judged by its fidelity, the fraction of the held-out
part on which it predicts what the model predicts. Its rules are then a readable summary of what the model does, as
far as the fidelity says. Features: a binary bag of words for text (scikit-learn's `CountVectorizer`); for images,
the mean intensity of each cell of the patch grid.

```python
from kd_hf.interpret.surrogate import bag_of_words, fit_surrogate, split_indices

features, names = bag_of_words(texts, split_indices(len(texts))[0])
surrogate = fit_surrogate(features, model_predictions, names, ["negative", "positive"])
surrogate["fidelity"], print(surrogate["rules"])
```
"""

import numpy as np


def split_indices(n: int, test_fraction: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random train / held-out split of `n` examples, both parts non-empty when `n >= 2`."""
    order = np.random.default_rng(seed).permutation(n)
    test = min(max(1, round(test_fraction * n)), n - 1) if n >= 2 else 0
    return np.sort(order[test:]), np.sort(order[:test])


def bag_of_words(texts: list[str], train: np.ndarray, min_df: int = 2) -> tuple[np.ndarray, list[str]]:
    """Binary word-presence features of `texts`, with the vocabulary of the `train` texts (words in >= `min_df` of
    them, or all words when that leaves none)."""
    from sklearn.feature_extraction.text import CountVectorizer

    train_texts = [texts[i] for i in train]
    try:
        vectorizer = CountVectorizer(binary=True, min_df=min_df).fit(train_texts)
    except ValueError:  # no word in min_df texts (a tiny sample)
        vectorizer = CountVectorizer(binary=True).fit(train_texts)
    return vectorizer.transform(texts).toarray(), [f'"{word}"' for word in vectorizer.get_feature_names_out()]


def pooled_patches(pixels, grid_size: int) -> tuple[np.ndarray, list[str]]:
    """The mean intensity (over channels too) of each cell of a `grid_size` x `grid_size` grid, per image."""
    from ..explain.vision import pool_to_grid

    grids = pool_to_grid(pixels.float().mean(1), grid_size).flatten(1).numpy()
    return grids, [f"cell[{r},{c}]" for r in range(grid_size) for c in range(grid_size)]


def fit_surrogate(
    features: np.ndarray,
    predictions: np.ndarray,
    feature_names: list[str],
    label_names: list[str],
    train: np.ndarray | None = None,
    test: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    max_depth: int = 3,
    min_samples_leaf: int = 5,
    seed: int = 0,
) -> dict:
    """Fit a `DecisionTreeClassifier(max_depth, min_samples_leaf)` to a model's `predictions` on the `train` examples
    (each rule covers at least `min_samples_leaf` of them, so that no rule merely describes one example).

    Returns:
        `dict` with `fidelity` (agreement with the model on the held-out `test` examples), `majority_fidelity`
        (the same for always predicting the model's most frequent training prediction), `train_fidelity`,
        `accuracy` (the tree against the true `labels` on `test`, if given), `leaves`, `depth`, `rules`
        (`sklearn.tree.export_text`), and the fitted `tree` (not JSON: `global_report` drops it).
    """
    from sklearn.tree import DecisionTreeClassifier, export_text

    if train is None or test is None:
        train, test = split_indices(len(predictions), seed=seed)
    predictions = np.asarray(predictions)
    tree = DecisionTreeClassifier(max_depth=max_depth, min_samples_leaf=min_samples_leaf, random_state=seed)
    tree.fit(features[train], predictions[train])
    names = [label_names[c] for c in tree.classes_]
    rules = export_text(tree, feature_names=list(feature_names), class_names=names, decimals=2)
    held_out = tree.predict(features[test])
    values, counts = np.unique(predictions[train], return_counts=True)
    return {
        "fidelity": float(np.mean(held_out == predictions[test])) if len(test) else None,
        # what a tree without rules scores: the model's most frequent training prediction, on the held-out part
        "majority_fidelity": float(np.mean(predictions[test] == values[counts.argmax()])) if len(test) else None,
        "train_fidelity": float(np.mean(tree.predict(features[train]) == predictions[train])),
        "accuracy": float(np.mean(held_out == np.asarray(labels)[test])) if labels is not None and len(test) else None,
        "leaves": int(tree.get_n_leaves()),
        "depth": int(tree.get_depth()),
        "rules": rules.replace("class: ", "predicts: "),
        "tree": tree,
    }
