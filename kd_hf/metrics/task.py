"""Task metrics computed locally: `evaluate.load("accuracy")` needs the Hub, scikit-learn does not."""

import numpy as np
from sklearn.metrics import accuracy_score, f1_score
from transformers import EvalPrediction


def classification_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
    """Accuracy and macro-F1 from a `Trainer`'s logits; usable as `compute_metrics`."""
    logits = eval_prediction.predictions
    if isinstance(logits, tuple):
        logits = logits[0]
    predictions = np.asarray(logits).argmax(-1)
    labels = np.asarray(eval_prediction.label_ids)
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, average="macro")),
    }
