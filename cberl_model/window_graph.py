"""Edges of the speaker graph inside one context window.

Node ``j`` sends a message to node ``i`` when ``i - past <= j <= i + future``. Each edge is
typed by direction and by whether both utterances have the same speaker (DialogueGCN's
relation types, plus a self-loop type) and weighted by temporal distance, so the attention
can tell "what I said just before" from "what you said three turns ago".

This sits below :mod:`cberl_model.nn` (beside :mod:`cberl_model.windows`, which batches the
windows): the network imports the edge types from here, and nothing here imports the network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

SELF, PAST_SAME, PAST_OTHER, FUTURE_SAME, FUTURE_OTHER = range(5)
NUM_EDGE_TYPES = 5


def window_edges(speakers: Sequence[int], past: int, future: int,
                 decay: float = 4.0) -> tuple[Tensor, Tensor, Tensor]:
    """Build the typed, weighted edges of one window.

    Args:
        speakers: Speaker index of each node, in time order.
        past: How many earlier utterances a node attends to.
        future: How many later utterances a node attends to.
        decay: Distance scale of the edge weight ``exp(-|i - j| / decay)``.

    Returns:
        ``edge_index`` ``(2, E)`` (source, target), ``edge_type`` ``(E,)`` and
        ``edge_weight`` ``(E,)``.
    """
    n = len(speakers)
    spk = torch.as_tensor(list(speakers), dtype=torch.long)
    target = torch.arange(n).repeat_interleave(n)
    source = torch.arange(n).repeat(n)
    offset = source - target
    keep = (offset >= -past) & (offset <= future)
    source, target, offset = source[keep], target[keep], offset[keep]
    same = spk[source] == spk[target]
    edge_type = torch.where(
        offset < 0,
        torch.where(same, PAST_SAME, PAST_OTHER),
        torch.where(same, FUTURE_SAME, FUTURE_OTHER),
    )
    edge_type = torch.where(offset == 0, SELF, edge_type)
    edge_weight = torch.exp(-offset.abs().float() / decay)
    return torch.stack([source, target]), edge_type, edge_weight
