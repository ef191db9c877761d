"""Unit tests of :class:`cberl_model.nn.SpeakerGAT` (``nn/speaker_gat.py``).

PyG style (``test/nn/conv/``): tiny hand-built inputs, parametrised configs, output shapes
and ``repr``; shared inputs come from :mod:`tests.cberl_model.nn_helpers`.
"""

from __future__ import annotations

import pytest
import torch

from cberl_model.nn import (
    SpeakerGAT,
)
from cberl_model.window_graph import (
    dense_window_edges,
    window_edges,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("heads,num_layers", [(1, 1), (2, 2), (4, 3)])
def test_speaker_gat_shape(heads: int, num_layers: int) -> None:
    gat = SpeakerGAT(8, heads=heads, num_layers=num_layers, edge_type_dim=3, dropout=0.0)
    assert repr(gat) == f"SpeakerGAT(8, heads={heads}, num_layers={num_layers})"
    edge_index, edge_type, edge_weight = window_edges([0, 1, 0, 1, 1], past=2, future=1)
    out = gat.eval()(torch.randn(5, 8), edge_index, edge_type, edge_weight)
    assert out.shape == (5, 8) and torch.isfinite(out).all()


def test_speaker_gat_heads_must_divide_dim() -> None:
    with pytest.raises(ValueError, match="divisible"):
        SpeakerGAT(10, heads=3)


def test_speaker_gat_uses_edge_types() -> None:
    torch.manual_seed(0)
    gat = SpeakerGAT(8, heads=2, num_layers=1, edge_type_dim=4, dropout=0.0).eval()
    x = torch.randn(4, 8)
    same = window_edges([0, 0, 0, 0], past=3, future=3)
    other = window_edges([0, 1, 2, 3], past=3, future=3)
    assert torch.equal(same[0], other[0])  # same graph, different relation types
    assert not torch.allclose(gat(x, *same), gat(x, *other))


@pytest.mark.parametrize("heads,num_layers", [(1, 1), (2, 2), (4, 3)])
def test_speaker_gat_infer_equals_forward_at_targets(heads: int, num_layers: int) -> None:
    """The dense eval path and the targets-only last layer give forward's target states."""
    torch.manual_seed(0)
    gat = SpeakerGAT(8, heads=heads, num_layers=num_layers, edge_type_dim=3, dropout=0.0).eval()
    sizes = [5, 1, 3, 4]
    graphs = [window_edges([i % 2 for i in range(n)], past=2, future=1) for n in sizes]
    offsets = [sum(sizes[:k]) for k in range(len(sizes))]
    edge_index = torch.cat([g[0] + o for g, o in zip(graphs, offsets, strict=True)], 1)
    edge_type = torch.cat([g[1] for g in graphs])
    edge_weight = torch.cat([g[2] for g in graphs])
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    targets = torch.tensor([o + n // 2 for o, n in zip(offsets, sizes, strict=True)])
    x = torch.randn(sum(sizes), 8)
    full = gat(x, edge_index, edge_type, edge_weight)[targets]
    only = gat(x, edge_index, edge_type, edge_weight, targets)
    dense = gat.infer(x, edge_index, edge_type, edge_weight, batch, targets, chunk_pairs=10)
    torch.testing.assert_close(only, full, atol=1e-5, rtol=0)
    torch.testing.assert_close(dense, full, atol=1e-5, rtol=0)

    # The fast path from precomputed first-layer maps on the dense layout.
    pos = torch.arange(x.size(0)) - torch.tensor(offsets)[batch]
    dense = torch.zeros(len(sizes), max(sizes), 8)
    dense[batch, pos] = x
    speakers = torch.zeros(len(sizes), max(sizes), dtype=torch.long)
    speakers[batch, pos] = torch.cat([torch.arange(n) % 2 for n in sizes])
    kinds, mask = dense_window_edges(torch.tensor(sizes), speakers, past=2, future=1)
    conv = gat.convs[0]
    fast = gat.infer_dense(dense, conv.lin_l(dense), conv.lin_r(dense), kinds, mask,
                           targets - torch.tensor(offsets), chunk_pairs=10)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=0)
