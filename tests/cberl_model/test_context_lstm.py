"""Unit tests of :class:`cberl_model.nn.ContextLSTM` (``nn/context_lstm.py``).

PyG style (``test/nn/conv/``): tiny hand-built inputs, parametrised configs, output shapes
and ``repr``; shared inputs come from :mod:`tests.cberl_model.nn_helpers`.
"""

from __future__ import annotations

import pytest
import torch

from cberl_model.nn import (
    ContextLSTM,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("hidden_dim", [4, 8])
def test_context_lstm_shape(num_layers: int, hidden_dim: int) -> None:
    lstm = ContextLSTM(6, hidden_dim, num_layers=num_layers, dropout=0.1)
    assert repr(lstm) == f"ContextLSTM(6, {2 * hidden_dim}, num_layers={num_layers})"
    x, batch = torch.randn(7, 6), torch.tensor([0, 0, 0, 1, 2, 2, 2])
    assert lstm.eval()(x, batch).shape == (7, 2 * hidden_dim)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_context_lstm_windows_are_independent(num_layers: int) -> None:
    torch.manual_seed(0)
    lstm = ContextLSTM(6, 5, num_layers=num_layers, dropout=0.3).eval()
    sizes = [4, 1, 6, 2, 3]
    x = torch.randn(sum(sizes), 6)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    together = lstm(x, batch)
    alone = torch.cat([lstm(chunk, torch.zeros(len(chunk), dtype=torch.long))
                       for chunk in x.split(sizes)])
    assert torch.allclose(together, alone, atol=1e-5)
    # It is bidirectional: the first node of a window sees what follows it.
    y = x.clone()
    y[3] += 1.0  # last node of window 0
    assert not torch.allclose(lstm(y, batch)[0], together[0])
    assert torch.allclose(lstm(y, batch)[4:], together[4:], atol=1e-6)


def test_context_lstm_infer_spans_equals_forward_per_window() -> None:
    """Shared forward (per start) / backward (per end) passes give each window's outputs."""
    torch.manual_seed(0)
    lstm = ContextLSTM(8, 5, dropout=0.0).eval()
    x = torch.randn(20, 8)
    starts = torch.tensor([0, 0, 1, 3, 5, 5, 12, 19])
    ends = torch.tensor([4, 6, 6, 6, 9, 10, 20, 20])
    forward, index_f, backward, index_b = lstm.infer_spans(x, starts, ends)
    for w, (s, e) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        expected = lstm(x[s:e], torch.zeros(e - s, dtype=torch.long))
        got = torch.cat([forward[index_f[w, :e - s]], backward[index_b[w, :e - s]]], -1)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
