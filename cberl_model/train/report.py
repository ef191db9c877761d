"""Run-directory artefacts a person reads: per-class report, confusion matrix, curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402


def plot_confusion(matrix: np.ndarray, labels: tuple[str, ...], path: Path, title: str) -> None:
    """Row-normalised confusion matrix with counts, saved as PNG."""
    norm = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_training_curve(history: list[dict[str, Any]], path: Path) -> None:
    """Training loss and dev weighted/macro F1 per epoch, saved as PNG."""
    train = [h for h in history if h["stage"] == "train"]
    valid = [h for h in history if h["stage"] == "valid"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot([h["epoch"] for h in train], [h["loss"] for h in train], label="total")
    left.plot([h["epoch"] for h in train], [h["focal"] for h in train], label="focal")
    left.set_xlabel("epoch")
    left.set_title("training loss")
    left.legend()
    right.plot([h["epoch"] for h in valid], [100 * h["weighted_f1"] for h in valid],
               label="weighted F1")
    right.plot([h["epoch"] for h in valid], [100 * h["macro_f1"] for h in valid], label="macro F1")
    right.set_xlabel("epoch")
    right.set_title("dev")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
