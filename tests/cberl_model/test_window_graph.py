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
