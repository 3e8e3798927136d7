"""Task metrics computed locally: `evaluate.load("accuracy")` needs the Hub, scikit-learn does not."""

import numpy as np
from sklearn.metrics import accuracy_score, f1_score
from transformers import EvalPrediction


def classification_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
    """Accuracy and macro-F1 from a `Trainer`'s logits over the labelled examples (label -100 is none); usable as
    `compute_metrics`. Without labelled examples there is nothing to score: `{}`."""
    logits = eval_prediction.predictions
    if isinstance(logits, tuple):
        logits = logits[0]
    labels = np.asarray(eval_prediction.label_ids)
    labelled = labels != -100
    if not labelled.any():
        return {}
    predictions = np.asarray(logits).argmax(-1)[labelled]
    labels = labels[labelled]
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, average="macro")),
    }
