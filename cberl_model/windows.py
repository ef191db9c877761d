"""Conversations as feature matrices, and the context windows the model is run on.

CBERL labels utterance ``i`` from the window of nodes ``[i - past, i + k]`` where ``k`` is
how much future is known (``k <= future``). Training, batch evaluation and incremental
inference all build windows with :func:`window_bounds` and batch them with
:meth:`WindowBatch.collate`, so a label depends only on its window's content and the three
paths agree exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from cberl_model.window_graph import window_edges


@dataclass
class ConversationFeatures:
    """A conversation as per-modality matrices (rows = utterances, zeros where absent)."""

    conversation_id: str
    utterance_ids: list[str]
    speakers: list[str]
    features: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.utterance_ids)


@dataclass(frozen=True)
class Window:
    """Nodes ``[start, end)`` of a conversation, predicting the node ``target``."""

    conversation: ConversationFeatures
    start: int
    end: int
    target: int


def window_bounds(index: int, known: int, past: int, future: int) -> tuple[int, int]:
    """``[start, end)`` of the window of utterance ``index`` when ``known`` utterances exist."""
    return max(0, index - past), min(known, index + future + 1)


@dataclass
class WindowBatch:
    """Many windows flattened into one graph (PyG-style ``batch`` vector).

    Attributes:
        features / present: Per-modality node features ``(N, d)`` and presence ``(N,)``.
        batch: Window index of each node ``(N,)``.
        edge_index / edge_type / edge_weight: The windows' speaker graphs, offset.
        target: Flat index of each window's target node ``(B,)``.
        labels: Class of each target ``(B,)`` (``-1`` when unlabelled).
    """

    features: dict[str, Tensor]
    present: dict[str, Tensor]
    batch: Tensor
    edge_index: Tensor
    edge_type: Tensor
    edge_weight: Tensor
    target: Tensor
    labels: Tensor

    @property
    def is_target(self) -> Tensor:
        """Bool ``(N,)``: which nodes are predicted (never masked)."""
        mask = torch.zeros_like(self.batch, dtype=torch.bool)
        mask[self.target] = True
        return mask

    @classmethod
    def collate(cls, windows: Sequence[Window], past: int, future: int,
                edge_decay: float) -> WindowBatch:
        """Flatten windows into one batch, building each window's edges."""
        feats: dict[str, list[np.ndarray]] = {}
        present: dict[str, list[np.ndarray]] = {}
        batch, targets, labels, edges, types, weights = [], [], [], [], [], []
        offset = 0
        for b, w in enumerate(windows):
            conv = w.conversation
            for m, matrix in conv.features.items():
                feats.setdefault(m, []).append(matrix[w.start:w.end])
                present.setdefault(m, []).append(conv.present[m][w.start:w.end])
            size = w.end - w.start
            index: dict[str, int] = {}
            speakers = [index.setdefault(s, len(index)) for s in conv.speakers[w.start:w.end]]
            edge_index, edge_type, edge_weight = window_edges(speakers, past, future, edge_decay)
            edges.append(edge_index + offset)
            types.append(edge_type)
            weights.append(edge_weight)
            batch.append(torch.full((size,), b, dtype=torch.long))
            targets.append(offset + w.target - w.start)
            labels.append(int(conv.labels[w.target]))
            offset += size
        return cls(
            features={m: torch.from_numpy(np.concatenate(v)).float() for m, v in feats.items()},
            present={m: torch.from_numpy(np.concatenate(v)).bool() for m, v in present.items()},
            batch=torch.cat(batch),
            edge_index=torch.cat(edges, dim=1),
            edge_type=torch.cat(types),
            edge_weight=torch.cat(weights),
            target=torch.tensor(targets, dtype=torch.long),
            labels=torch.tensor(labels, dtype=torch.long),
        )

    def to(self, device: torch.device) -> WindowBatch:
        """Move every tensor to ``device``."""
        return WindowBatch(
            features={m: t.to(device) for m, t in self.features.items()},
            present={m: t.to(device) for m, t in self.present.items()},
            batch=self.batch.to(device), edge_index=self.edge_index.to(device),
            edge_type=self.edge_type.to(device), edge_weight=self.edge_weight.to(device),
            target=self.target.to(device), labels=self.labels.to(device),
        )


def evaluation_windows(conversations: Sequence[ConversationFeatures], past: int,
                       future: int) -> list[Window]:
    """One window per utterance with ``future`` utterances of look-ahead (0 = revision 0)."""
    windows = []
    for conv in conversations:
        for i in range(len(conv)):
            start, end = window_bounds(i, len(conv), past, future)
            windows.append(Window(conv, start, end, i))
    return windows


def training_windows(conversations: Sequence[ConversationFeatures], past: int, future: int,
                     full_future_rate: float, rng: np.random.Generator) -> list[Window]:
    """One window per labelled utterance, its future randomly truncated.

    With probability ``full_future_rate`` a window sees the full ``future``; otherwise a
    uniform ``0..future-1`` utterances of it, as a live call has when the label is first
    emitted. This keeps provisional (revision-0) labels good.
    """
    windows = []
    for conv in conversations:
        for i in np.flatnonzero(conv.labels >= 0):
            k = future if future == 0 or rng.random() < full_future_rate else int(rng.integers(future))
            start, end = window_bounds(int(i), len(conv), past, k)
            windows.append(Window(conv, start, end, int(i)))
    return windows
