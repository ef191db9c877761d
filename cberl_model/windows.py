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

from cberl_model.window_graph import batched_window_edges


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
class NodeTable:
    """The nodes of many conversations as one table (what :meth:`WindowBatch.from_spans` cuts).

    Attributes:
        features / present: Per-modality rows ``(U, d)`` and presence ``(U,)``.
        speakers: Speaker id of each row ``(U,)``, distinct across conversations.
    """

    features: dict[str, Tensor]
    present: dict[str, Tensor]
    speakers: Tensor


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
        """Flatten windows into one batch, building each window's edges.

        Each conversation's matrices are stacked once; the windows become spans of that
        node table (:meth:`from_spans`), so nothing is done per window beyond its bounds.
        """
        rows: dict[int, int] = {}
        convs: list[ConversationFeatures] = []
        for w in windows:
            if id(w.conversation) not in rows:
                rows[id(w.conversation)] = sum(len(c) for c in convs)
                convs.append(w.conversation)
        speaker_ids: dict[tuple[int, str], int] = {}
        speakers = [speaker_ids.setdefault((k, s), len(speaker_ids))
                    for k, c in enumerate(convs) for s in c.speakers]
        modalities = list(convs[0].features) if convs else []
        first = np.array([rows[id(w.conversation)] for w in windows], dtype=np.int64)
        bounds = np.array([(w.start, w.end, w.target) for w in windows], dtype=np.int64).reshape(-1, 3)
        labels = np.concatenate([c.labels for c in convs]) if convs else np.zeros(0, np.int64)
        return cls.from_spans(
            features={m: torch.from_numpy(np.concatenate([c.features[m] for c in convs])).float()
                      for m in modalities},
            present={m: torch.from_numpy(np.concatenate([c.present[m] for c in convs])).bool()
                     for m in modalities},
            speakers=torch.tensor(speakers, dtype=torch.long),
            starts=torch.from_numpy(first + bounds[:, 0]), ends=torch.from_numpy(first + bounds[:, 1]),
            targets=torch.from_numpy(first + bounds[:, 2]),
            labels=torch.from_numpy(labels.astype(np.int64)),
            past=past, future=future, edge_decay=edge_decay)

    @classmethod
    def from_spans(cls, features: dict[str, Tensor], present: dict[str, Tensor], speakers: Tensor,
                   starts: Tensor, ends: Tensor, targets: Tensor, labels: Tensor, past: int,
                   future: int, edge_decay: float) -> WindowBatch:
        """Windows as spans ``[starts[w], ends[w])`` of one node table, in vectorised torch.

        Args:
            features / present: The node table per modality, ``(U, d)`` and ``(U,)``.
            speakers: Speaker id of each table row ``(U,)`` (ids distinct across calls).
            starts / ends / targets: Each window's bounds and target row ``(W,)``.
            labels: Class of each table row ``(U,)`` (``-1``: unlabelled).
            past / future / edge_decay: The window graph (:func:`batched_window_edges`).
        """
        device = speakers.device
        sizes = ends - starts
        count = int(sizes.numel())
        # 1. Window-node -> table row, PyG ``batch`` vector and per-window offsets.
        batch = torch.repeat_interleave(torch.arange(count, device=device), sizes)
        offsets = torch.cumsum(sizes, 0) - sizes
        node = starts[batch] + torch.arange(int(batch.numel()), device=device) - offsets[batch]
        # 2. The windows' speaker graphs, all at once.
        edge_index, edge_type, edge_weight = batched_window_edges(
            sizes, speakers[node], past, future, edge_decay)
        return cls(
            features={m: t.index_select(0, node) for m, t in features.items()},
            present={m: t.index_select(0, node) for m, t in present.items()},
            batch=batch, edge_index=edge_index, edge_type=edge_type, edge_weight=edge_weight,
            target=offsets + targets - starts, labels=labels.index_select(0, targets),
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
