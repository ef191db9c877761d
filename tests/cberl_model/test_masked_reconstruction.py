"""Unit tests of :class:`cberl_model.nn.MaskedReconstruction` (``nn/masked_reconstruction.py``).

PyG style (``test/nn/conv/``): tiny hand-built inputs, parametrised configs, output shapes
and ``repr``; shared inputs come from :mod:`tests.cberl_model.nn_helpers`.
"""

from __future__ import annotations

import pytest
import torch

from cberl_model.nn import (
    MaskedReconstruction,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_masked_reconstruction_repr_and_shapes() -> None:
    rec = MaskedReconstruction(8, 12, {"text": 5, "audio": 3}, mask_rate=0.5)
    assert repr(rec) == "MaskedReconstruction(mask_rate=0.5, target_mask_rate=0.0, heads=['text', 'audio'])"
    fused = torch.randn(20, 8)
    masked, mask = rec.train().mask(fused, torch.zeros(20, dtype=torch.bool))
    assert masked.shape == (20, 8) and mask.shape == (20,) and mask.dtype == torch.bool
    assert torch.equal(masked[~mask], fused[~mask])
    assert torch.equal(masked[mask], rec.mask_token.expand(int(mask.sum()), 8))


def test_masked_reconstruction_protects_targets() -> None:
    torch.manual_seed(0)
    rec = MaskedReconstruction(4, 4, {"text": 3}, mask_rate=0.9).train()
    protected = torch.arange(200) % 3 == 0
    fused = torch.randn(200, 4)
    for _ in range(5):
        masked, mask = rec.mask(fused, protected)
        assert not (mask & protected).any()
        assert torch.equal(masked[protected], fused[protected])
        assert mask.any()


def test_masked_reconstruction_eval_masks_nothing() -> None:
    rec = MaskedReconstruction(4, 4, {"text": 3}, mask_rate=0.5).eval()
    fused = torch.randn(50, 4)
    masked, mask = rec.mask(fused, torch.zeros(50, dtype=torch.bool))
    assert not mask.any() and torch.equal(masked, fused)
    zero = MaskedReconstruction(4, 4, {"text": 3}, mask_rate=0.0).train()
    assert not zero.mask(fused, torch.zeros(50, dtype=torch.bool))[1].any()


@pytest.mark.parametrize("rate", [0.15, 0.5])
def test_masked_reconstruction_rate(rate: float) -> None:
    torch.manual_seed(0)
    rec = MaskedReconstruction(2, 2, {"text": 2}, mask_rate=rate).train()
    n = 20000
    protected = torch.zeros(n, dtype=torch.bool)
    protected[: n // 2] = True
    _, mask = rec.mask(torch.zeros(n, 2), protected)
    # Half the nodes are protected; the rest are masked at about ``rate``.
    observed = mask[n // 2:].float().mean().item()
    assert abs(observed - rate) < 0.03


def test_masked_reconstruction_loss() -> None:
    torch.manual_seed(0)
    rec = MaskedReconstruction(4, 6, {"text": 3, "audio": 2}, mask_rate=0.5)
    context = torch.randn(10, 6)
    features = {"text": torch.randn(10, 3), "audio": torch.randn(10, 2)}
    present = {"text": torch.ones(10, dtype=torch.bool), "audio": torch.zeros(10, dtype=torch.bool)}
    mask = torch.zeros(10, dtype=torch.bool)
    mask[[1, 4]] = True
    loss = rec.loss(context, mask, features, present)
    assert loss.dim() == 0
    expected = ((rec.heads["text"](context[mask]) - features["text"][mask]) ** 2).mean()
    assert torch.allclose(loss, expected)
    empty = rec.loss(context, torch.zeros(10, dtype=torch.bool), features, present)
    assert empty.dim() == 0 and empty.item() == 0.0


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_masked_reconstruction_invalid_rate(rate: float) -> None:
    with pytest.raises(ValueError, match="mask_rate"):
        MaskedReconstruction(4, 4, {"text": 3}, mask_rate=rate)


def test_masked_reconstruction_masks_targets_at_their_own_rate() -> None:
    torch.manual_seed(0)
    rec = MaskedReconstruction(4, 4, {"text": 3}, mask_rate=0.0, target_mask_rate=0.5).train()
    targets = torch.arange(2000) % 2 == 0
    _, mask = rec.mask(torch.randn(2000, 4), targets)
    assert not mask[~targets].any()
    assert 0.4 < mask[targets].float().mean().item() < 0.6
    with pytest.raises(ValueError, match="target_mask_rate"):
        MaskedReconstruction(4, 4, {"text": 3}, target_mask_rate=1.0)
