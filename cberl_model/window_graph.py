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
    spk = torch.as_tensor(list(speakers), dtype=torch.long)
    return batched_window_edges(torch.tensor([len(spk)]), spk, past, future, decay)


def batched_window_edges(sizes: Tensor, speakers: Tensor, past: int, future: int,
                         decay: float = 4.0) -> tuple[Tensor, Tensor, Tensor]:
    """The edges of many windows at once, as :func:`window_edges` builds each (vectorised).

    The windows lie one after the other in a flat node list (window ``w`` holds the
    ``sizes[w]`` nodes after those of windows ``0..w-1``); edges come window by window,
    target-major, sources ascending, exactly as :func:`window_edges` orders them.

    Args:
        sizes: Nodes per window ``(W,)``.
        speakers: Speaker index of each flat node ``(N,)``; only equality matters, so the
            ids need not restart per window.
        past / future / decay: As in :func:`window_edges`.

    Returns:
        ``edge_index`` ``(2, E)`` into the flat nodes, ``edge_type`` ``(E,)``,
        ``edge_weight`` ``(E,)``.
    """
    device = speakers.device
    sizes = sizes.to(device=device, dtype=torch.long)
    empty = torch.zeros(0, dtype=torch.long, device=device)
    if sizes.numel() == 0 or int(sizes.max()) == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=device), empty, empty.float()
    longest = int(sizes.max())
    offsets = torch.cumsum(sizes, 0) - sizes
    # 1. A (windows, target, source) grid of candidate pairs: inside the window and the band.
    pos = torch.arange(longest, device=device)
    offset = pos.view(1, -1) - pos.view(-1, 1)  # source - target, (target, source)
    band = (offset >= -past) & (offset <= future)
    inside = pos.view(1, -1) < sizes.view(-1, 1)  # (W, L)
    keep = band.unsqueeze(0) & inside.unsqueeze(2) & inside.unsqueeze(1)
    # 2. Row-major nonzero: window by window, target-major, sources ascending.
    window, target, source = keep.nonzero(as_tuple=True)
    delta = source - target
    target, source = offsets[window] + target, offsets[window] + source
    same = speakers[source] == speakers[target]
    edge_type = torch.where(
        delta < 0,
        torch.where(same, PAST_SAME, PAST_OTHER),
        torch.where(same, FUTURE_SAME, FUTURE_OTHER),
    )
    edge_type = torch.where(delta == 0, SELF, edge_type)
    edge_weight = torch.exp(-delta.abs().float() / decay)
    return torch.stack([source, target]), edge_type, edge_weight


def dense_window_edges(sizes: Tensor, speakers: Tensor, past: int, future: int,
                       decay: float = 4.0) -> tuple[Tensor, Tensor]:
    """The edges of many windows on a dense ``(window, target, source)`` grid.

    The same graph as :func:`batched_window_edges`, laid out for dense attention: edge
    ``j -> i`` of window ``w`` is ``mask[w, i, j]``, its type one-hot in
    ``kinds[w, i, j, :NUM_EDGE_TYPES]`` and its weight in ``kinds[w, i, j, NUM_EDGE_TYPES]``.

    Args:
        sizes: Nodes per window ``(W,)``.
        speakers: Speaker of each window position ``(W, L)``, ``L >= sizes.max()``;
            only equality within a window matters (padding is ignored).
        past / future / decay: As in :func:`window_edges`.

    Returns:
        ``kinds`` float ``(W, L, L, NUM_EDGE_TYPES + 1)`` and ``mask`` bool ``(W, L, L)``.
    """
    device = speakers.device
    longest = speakers.size(1)
    pos = torch.arange(longest, device=device)
    delta = pos.view(1, -1) - pos.view(-1, 1)  # source - target, (target, source)
    band = (delta >= -past) & (delta <= future)
    inside = pos.view(1, -1) < sizes.view(-1, 1)  # (W, L)
    mask = band & inside.unsqueeze(2) & inside.unsqueeze(1)
    same = speakers.unsqueeze(2) == speakers.unsqueeze(1)  # (W, L, L)
    base = torch.where(delta < 0, PAST_SAME, FUTURE_SAME)  # *_OTHER = *_SAME + 1
    edge_type = torch.where(delta == 0, SELF, base + (~same).long())
    kinds = torch.zeros(*mask.shape, NUM_EDGE_TYPES + 1, device=device)
    kinds[..., :NUM_EDGE_TYPES] = torch.nn.functional.one_hot(edge_type, NUM_EDGE_TYPES).float()
    kinds[..., NUM_EDGE_TYPES] = torch.exp(-delta.abs().float() / decay)
    kinds.mul_(mask.unsqueeze(-1))
    return kinds, mask
