"""Unit tests of the context windows and their batching (``cberl_model/windows.py``).

PyG style (``test/nn/conv/``): tiny hand-built inputs, parametrised configs, output shapes
and ``repr``; shared inputs come from :mod:`tests.cberl_model.nn_helpers`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cberl_model.window_graph import (
    PAST_SAME,
    window_edges,
)
from cberl_model.windows import (
    Window,
    WindowBatch,
    evaluation_windows,
    training_windows,
    window_bounds,
)
from tests.cberl_model.nn_helpers import (
    make_conversation,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("index,known,past,future,expected", [
    (0, 5, 2, 1, (0, 2)),
    (3, 5, 2, 1, (1, 5)),
    (4, 5, 2, 1, (2, 5)),
    (4, 10, 10, 2, (0, 7)),
    (6, 7, 3, 0, (3, 7)),
    (2, 3, 0, 0, (2, 3)),
])
def test_window_bounds(index: int, known: int, past: int, future: int,
                       expected: tuple[int, int]) -> None:
    assert window_bounds(index, known, past, future) == expected


def test_window_batch_collate() -> None:
    rng = np.random.default_rng(0)
    conv_a = make_conversation(rng, "a", 5, {"text": 4, "audio": 2}, 3)
    conv_b = make_conversation(rng, "b", 3, {"text": 4, "audio": 2}, 3, unlabelled=(1,))
    conv_a.speakers = ["x", "y", "x", "x", "y"]
    conv_b.speakers = ["q", "q", "r"]
    windows = [Window(conv_a, 1, 5, 3), Window(conv_b, 0, 2, 1), Window(conv_a, 0, 1, 0)]
    batch = WindowBatch.collate(windows, past=2, future=1, edge_decay=4.0)
    assert batch.batch.tolist() == [0, 0, 0, 0, 1, 1, 2]
    assert batch.target.tolist() == [2, 5, 6]
    assert batch.labels.tolist() == [int(conv_a.labels[3]), -1, int(conv_a.labels[0])]
    assert batch.is_target.tolist() == [False, False, True, False, False, True, True]
    assert batch.features["text"].dtype == torch.float32
    assert batch.present["audio"].dtype == torch.bool
    assert torch.equal(batch.features["text"][:4], torch.from_numpy(conv_a.features["text"][1:5]))
    assert torch.equal(batch.features["audio"][4:6],
                       torch.from_numpy(conv_b.features["audio"][0:2]))
    assert batch.present["audio"].tolist() == (list(conv_a.present["audio"][1:5])
                                               + list(conv_b.present["audio"][0:2])
                                               + [bool(conv_a.present["audio"][0])])
    # Edges: each window's own graph, offset, never crossing windows.
    src, dst = batch.edge_index
    assert torch.equal(batch.batch[src], batch.batch[dst])
    expected = [window_edges(s, 2, 1) for s in ([0, 1, 1, 0], [0, 0], [0])]
    offsets = [0, 4, 6]
    assert torch.equal(batch.edge_index,
                       torch.cat([e[0] + o for e, o in zip(expected, offsets, strict=True)], 1))
    assert torch.equal(batch.edge_type, torch.cat([e[1] for e in expected]))
    assert torch.allclose(batch.edge_weight, torch.cat([e[2] for e in expected]))
    # Speaker identity is per window: same speaker -> *_SAME edge types.
    past_same = batch.edge_index[:, batch.edge_type == PAST_SAME].t().tolist()
    assert sorted(map(tuple, past_same)) == [(1, 2), (4, 5)]
    moved = batch.to(torch.device("cpu"))
    assert torch.equal(moved.edge_index, batch.edge_index)
    assert moved.features.keys() == batch.features.keys()


def test_evaluation_windows() -> None:
    rng = np.random.default_rng(1)
    convs = [make_conversation(rng, "a", 4, {"text": 3}, 2, unlabelled=(2,)),
             make_conversation(rng, "b", 2, {"text": 3}, 2)]
    windows = evaluation_windows(convs, past=2, future=1)
    assert [(w.conversation.conversation_id, w.start, w.end, w.target) for w in windows] == [
        ("a", 0, 2, 0), ("a", 0, 3, 1), ("a", 0, 4, 2), ("a", 1, 4, 3),
        ("b", 0, 2, 0), ("b", 0, 2, 1)]
    revision0 = evaluation_windows(convs, past=1, future=0)
    assert all(w.end == w.target + 1 for w in revision0)


@pytest.mark.parametrize("future", [0, 1, 3])
def test_training_windows(future: int) -> None:
    rng = np.random.default_rng(2)
    convs = [make_conversation(rng, "a", 30, {"text": 3}, 2, unlabelled=(0, 5, 29)),
             make_conversation(rng, "b", 20, {"text": 3}, 2)]
    full = training_windows(convs, past=4, future=future, full_future_rate=1.0,
                            rng=np.random.default_rng(0))
    assert len(full) == 47
    assert all(int(w.conversation.labels[w.target]) >= 0 for w in full)
    assert all((w.start, w.end) == window_bounds(w.target, len(w.conversation), 4, future)
               for w in full)
    truncated = training_windows(convs, past=4, future=future, full_future_rate=0.0,
                                 rng=np.random.default_rng(0))
    assert [w.target for w in truncated] == [w.target for w in full]
    for w in truncated:
        seen = w.end - w.target - 1
        room = len(w.conversation) - w.target - 1
        assert w.start == max(0, w.target - 4)
        if future == 0:
            assert seen == 0
        else:
            assert 0 <= seen <= min(future - 1, room)
    if future == 3:  # the truncation is random, not always the same amount
        assert len({w.end - w.target for w in truncated if w.target < 15}) > 1
