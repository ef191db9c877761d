"""Classification metrics in the one JSON shape every tool of the project reports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def classification_report(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray,
                          labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, weighted and macro F1, and per-class precision/recall/F1/support.

    All scores are fractions in 0..1. Classes absent from both ``y_true`` and ``y_pred``
    still appear (with zero support), so reports of different splits line up.

    Returns:
        ``{"accuracy", "weighted_f1", "macro_f1", "per_class": {label: {"precision",
        "recall", "f1", "support"}}, "num_utterances"}``.
    """
    # Imported here: scikit-learn costs a second at import, on the path of every worker
    # start (the worker imports this module through inference and never scores).
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must be equal 1-D shapes")
    if len(y_true) == 0:
        raise ValueError("cannot score an empty set of predictions")
    indices = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=indices, zero_division=0)
    _, _, weighted_f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=indices, average="weighted", zero_division=0)
    present = support > 0
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "weighted_f1": float(weighted_f1),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "num_utterances": int(len(y_true)),
        "per_class": {
            label: {"precision": float(precision[i]), "recall": float(recall[i]),
                    "f1": float(f1[i]), "support": int(support[i])}
            for i, label in enumerate(labels)
        },
    }


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion counts, rows = true class, columns = predicted class."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))


def format_report(report: dict[str, Any]) -> str:
    """A fixed-width text table of a :func:`classification_report` result (percentages)."""
    lines = [
        f"accuracy     {100 * report['accuracy']:6.2f}",
        f"weighted F1  {100 * report['weighted_f1']:6.2f}",
        f"macro F1     {100 * report['macro_f1']:6.2f}",
        "",
        f"{'class':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}",
    ]
    for label, row in report["per_class"].items():
        lines.append(f"{label:<12}{100 * row['precision']:>10.2f}{100 * row['recall']:>10.2f}"
                     f"{100 * row['f1']:>10.2f}{row['support']:>10d}")
    return "\n".join(lines)
