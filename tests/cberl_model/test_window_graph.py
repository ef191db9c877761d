"""Unit tests of the window speaker graph (``cberl_model/window_graph.py``).

PyG style (``test/nn/conv/``): tiny hand-built inputs, parametrised configs, output shapes
and ``repr``; shared inputs come from :mod:`tests.cberl_model.nn_helpers`.
"""

from __future__ import annotations

import math

import pytest
import torch

from cberl_model.window_graph import (
    FUTURE_OTHER,
    FUTURE_SAME,
    NUM_EDGE_TYPES,
    PAST_OTHER,
    PAST_SAME,
    SELF,
    batched_window_edges,
    dense_window_edges,
    window_edges,
)
from tests.cberl_model.nn_helpers import (
    edge_table,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_window_edges_exact() -> None:
    decay = 4.0
    edge_index, edge_type, edge_weight = window_edges([0, 1, 0, 0], past=1, future=1,
                                                      decay=decay)
    assert edge_index.shape == (2, 10) and edge_index.dtype == torch.long
    assert edge_type.shape == (10,) and edge_weight.shape == (10,)
    one = math.exp(-1 / decay)
    expected = {
        (0, 0): (SELF, 1.0), (1, 1): (SELF, 1.0), (2, 2): (SELF, 1.0), (3, 3): (SELF, 1.0),
        # source earlier than target: the target looks at its past
        (0, 1): (PAST_OTHER, one), (1, 2): (PAST_OTHER, one), (2, 3): (PAST_SAME, one),
        # source later than target: the target looks at its future
        (1, 0): (FUTURE_OTHER, one), (2, 1): (FUTURE_OTHER, one), (3, 2): (FUTURE_SAME, one),
    }
    table = edge_table(edge_index, edge_type, edge_weight)
    assert table.keys() == expected.keys()
    for key, (kind, weight) in expected.items():
        assert table[key][0] == kind, key
        assert table[key][1] == pytest.approx(weight, abs=1e-6), key


def test_window_edges_asymmetric_past_future() -> None:
    speakers = [0, 0, 1, 0, 1]
    edge_index, edge_type, edge_weight = window_edges(speakers, past=2, future=0, decay=2.0)
    table = edge_table(edge_index, edge_type, edge_weight)
    expected_keys = {(s, t) for t in range(5) for s in range(max(0, t - 2), t + 1)}
    assert table.keys() == expected_keys
    for (s, t), (kind, weight) in table.items():
        if s == t:
            assert kind == SELF
        else:
            assert kind == (PAST_SAME if speakers[s] == speakers[t] else PAST_OTHER)
        assert weight == pytest.approx(math.exp(-(t - s) / 2.0), abs=1e-6)
    # Future only: every non-self edge comes from a later node.
    edge_index, edge_type, _ = window_edges(speakers, past=0, future=3)
    src, dst = edge_index
    assert (src >= dst).all()
    assert set(edge_type[src > dst].tolist()) <= {FUTURE_SAME, FUTURE_OTHER}
    assert int((src == dst).sum()) == 5
    assert 0 <= int(edge_type.min()) and int(edge_type.max()) < NUM_EDGE_TYPES


def test_window_edges_single_node() -> None:
    edge_index, edge_type, edge_weight = window_edges([3], past=10, future=2)
    assert edge_index.tolist() == [[0], [0]]
    assert edge_type.tolist() == [SELF] and edge_weight.tolist() == [1.0]


def test_batched_window_edges_equal_one_window_at_a_time() -> None:
    sizes = [4, 1, 0, 6, 3]
    speakers = [[0, 1, 0, 0], [2], [], [1, 1, 0, 2, 0, 1], [0, 0, 0]]
    edge_index, edge_type, edge_weight = batched_window_edges(
        torch.tensor(sizes), torch.tensor([s for w in speakers for s in w]), past=2, future=1)
    parts = [window_edges(s, past=2, future=1) for s, n in zip(speakers, sizes, strict=True) if n]
    offsets = [sum(sizes[:k]) for k, n in enumerate(sizes) if n]
    assert torch.equal(edge_index, torch.cat([p[0] + o for p, o in zip(parts, offsets, strict=True)], 1))
    assert torch.equal(edge_type, torch.cat([p[1] for p in parts]))
    assert torch.equal(edge_weight, torch.cat([p[2] for p in parts]))


def test_dense_window_edges_equal_the_flat_edges() -> None:
    """The dense (window, target, source) grid holds exactly batched_window_edges' edges."""
    torch.manual_seed(0)
    sizes = torch.tensor([5, 1, 3, 13, 12])
    speakers = torch.randint(0, 3, (5, 13))
    kinds, mask = dense_window_edges(sizes, speakers, 10, 2, 4.0)
    flat = torch.cat([speakers[w, :n] for w, n in enumerate(sizes.tolist())])
    edge_index, edge_type, edge_weight = batched_window_edges(sizes, flat, 10, 2, 4.0)
    batch = torch.repeat_interleave(torch.arange(5), sizes)
    pos = torch.arange(flat.numel()) - (torch.cumsum(sizes, 0) - sizes)[batch]
    source, target = edge_index
    grid = (batch[target], pos[target], pos[source])
    expected_kinds, expected_mask = torch.zeros_like(kinds), torch.zeros_like(mask)
    expected_kinds[(*grid, edge_type)] = 1.0
    expected_kinds[(*grid, torch.full_like(edge_type, NUM_EDGE_TYPES))] = edge_weight
    expected_mask[grid] = True
    assert torch.equal(mask, expected_mask)
    assert torch.equal(kinds, expected_kinds)
