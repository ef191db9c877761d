"""Prediction and evaluation on context windows, shared by the trainer and the serving path.

Everything that runs a trained :class:`~cberl_model.nn.CBERL` on windows lives here: the
trainer's dev pass, :mod:`cberl_model.evaluate`, and :class:`~cberl_model.inference.
EmotionRecognizer` all call :func:`predict_windows`, so the three agree exactly. Nothing
here imports the trainer (:mod:`cberl_model.train`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cberl_model.data import CorpusError
from cberl_model.metrics import classification_report
from cberl_model.nn import CBERL
from cberl_model.windows import (
    ConversationFeatures,
    NodeTable,
    Window,
    WindowBatch,
    evaluation_windows,
)


def predict_windows(model: CBERL, windows: Sequence[Window], device: torch.device,
                    batch_size: int = 256) -> np.ndarray:
    """Class probabilities ``(len(windows), C)`` of each window's target, in eval mode."""
    config = model.config
    out = []
    for start in range(0, len(windows), batch_size):
        batch = WindowBatch.collate(windows[start:start + batch_size], config.past,
                                    config.future, config.edge_decay).to(device)
        out.append(model.predict_proba(batch).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, config.num_classes), dtype=np.float32)


def predict_spans(model: CBERL, table: NodeTable, starts: np.ndarray, ends: np.ndarray,
                  targets: np.ndarray, device: torch.device) -> np.ndarray:
    """Class probabilities ``(W, C)`` of windows given as spans of one node table.

    One forward pass for all of them (the incremental path's micro-batch), sharing the work
    of nodes that several windows hold (:meth:`~cberl_model.nn.CBERL.predict_spans`; the
    same values as ``predict_proba`` of :meth:`~cberl_model.windows.WindowBatch.from_spans`).
    """

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(device)

    return model.predict_spans(table.features, table.present, table.speakers, tensor(starts),
                               tensor(ends), tensor(targets)).cpu().numpy()


def evaluate_conversations(model: CBERL, conversations: list[ConversationFeatures],
                           labels: tuple[str, ...], future: int,
                           device: torch.device) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Report, true and predicted classes of every labelled utterance with ``future`` look-ahead.

    Raises:
        CorpusError: If no utterance of ``conversations`` is labelled.
    """
    windows = [w for w in evaluation_windows(conversations, model.config.past, future)
               if w.conversation.labels[w.target] >= 0]
    if not windows:
        raise CorpusError("evaluation", "no labelled utterances to score")
    probs = predict_windows(model, windows, device)
    y_true = np.array([int(w.conversation.labels[w.target]) for w in windows])
    y_pred = probs.argmax(1)
    return classification_report(y_true, y_pred, labels), y_true, y_pred
