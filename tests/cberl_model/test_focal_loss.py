"""Unit tests of :class:`cberl_model.nn.FocalLoss` (``nn/focal_loss.py``).

PyG style (``test/nn/conv/``): tiny hand-built inputs, parametrised configs, output shapes
and ``repr``; shared inputs come from :mod:`tests.cberl_model.nn_helpers`.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from cberl_model.nn import (
    FocalLoss,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_focal_loss_gamma_zero_is_cross_entropy() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(16, 5), torch.randint(5, (16,))
    loss = FocalLoss(gamma=0.0)
    assert repr(loss) == "FocalLoss(gamma=0.0, weighted=False)"
    out = loss(logits, target)
    assert out.dim() == 0
    assert torch.allclose(out, F.cross_entropy(logits, target), atol=1e-6)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 5.0])
def test_focal_loss_is_at_most_cross_entropy(gamma: float) -> None:
    torch.manual_seed(1)
    logits, target = 3 * torch.randn(32, 4), torch.randint(4, (32,))
    focal = FocalLoss(gamma=gamma)(logits, target)
    ce = F.cross_entropy(logits, target)
    assert 0 < focal.item() < ce.item()
    # Per example: (1 - p)^gamma * CE, i.e. easy examples are down-weighted.
    p = logits.softmax(-1)[torch.arange(32), target]
    expected = ((1 - p) ** gamma * -p.log()).mean()
    assert torch.allclose(focal, expected, atol=1e-6)


def test_focal_loss_class_weights() -> None:
    torch.manual_seed(2)
    logits, target = torch.randn(20, 3), torch.randint(3, (20,))
    weight = torch.tensor([1.0, 2.0, 0.5])
    weighted = FocalLoss(gamma=0.0, weight=weight)
    assert repr(weighted) == "FocalLoss(gamma=0.0, weighted=True)"
    # gamma=0 with weights: PyTorch's weighted cross-entropy (normalised by the weights).
    assert torch.allclose(weighted(logits, target),
                          F.cross_entropy(logits, target, weight=weight), atol=1e-6)
    # Uniform weights change nothing; a zero weight removes that class's examples.
    focal = FocalLoss(gamma=2.0)
    assert torch.allclose(FocalLoss(2.0, torch.full((3,), 7.0))(logits, target),
                          focal(logits, target), atol=1e-6)
    only_class_1 = FocalLoss(2.0, torch.tensor([0.0, 1.0, 0.0]))(logits, target)
    keep = target == 1
    assert torch.allclose(only_class_1, focal(logits[keep], target[keep]), atol=1e-6)
    # Up-weighting the class with the larger loss raises the mean.
    per_class = torch.stack([focal(logits[target == c], target[target == c]) for c in range(3)])
    hard = int(per_class.argmax())
    up = torch.ones(3)
    up[hard] = 10.0
    assert FocalLoss(2.0, up)(logits, target) > focal(logits, target)


def test_focal_loss_negative_gamma_raises() -> None:
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-0.5)
