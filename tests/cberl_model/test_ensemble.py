"""Unit tests of :class:`cberl_model.nn.WeakClassifierEnsemble` (``nn/ensemble.py``).

PyG style (``test/nn/conv/``): tiny hand-built inputs, parametrised configs, output shapes
and ``repr``; shared inputs come from :mod:`tests.cberl_model.nn_helpers`.
"""

from __future__ import annotations

import pytest
import torch

from cberl_model.nn import (
    WeakClassifierEnsemble,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("input_dim,num_members,subspace", [
    (10, 3, 0.3), (16, 5, 0.75), (7, 2, 1.0), (9, 4, 0.01)])
def test_ensemble_shape_and_masks(input_dim: int, num_members: int, subspace: float) -> None:
    ens = WeakClassifierEnsemble(input_dim, 3, num_members=num_members, hidden_dim=8,
                                 subspace=subspace, dropout=0.0, seed=1)
    assert repr(ens) == f"WeakClassifierEnsemble({input_dim}, 3, num_members={num_members})"
    logits = ens(torch.randn(6, input_dim))
    assert logits.shape == (num_members, 6, 3)
    keep = max(1, round(subspace * input_dim))
    assert ens.masks.shape == (num_members, input_dim)
    assert ens.masks.sum(1).tolist() == [float(keep)] * num_members
    assert set(ens.masks.unique().tolist()) <= {0.0, 1.0}
    probs = WeakClassifierEnsemble.probabilities(logits)
    assert probs.shape == (6, 3)
    assert torch.allclose(probs.sum(-1), torch.ones(6), atol=1e-6)


def test_ensemble_member_ignores_features_outside_its_subspace() -> None:
    ens = WeakClassifierEnsemble(12, 3, num_members=3, hidden_dim=8, subspace=0.5,
                                 dropout=0.0).eval()
    x = torch.randn(4, 12)
    for k in range(3):
        y = x.clone()
        y[:, ens.masks[k] == 0] = 50.0
        out_x, out_y = ens(x), ens(y)
        assert torch.allclose(out_x[k], out_y[k])
    # Different members see different subsets; the same seed draws the same ones.
    assert not all(torch.equal(ens.masks[0], m) for m in ens.masks[1:])
    again = WeakClassifierEnsemble(12, 3, num_members=3, hidden_dim=8, subspace=0.5)
    assert torch.equal(ens.masks, again.masks)


def test_ensemble_single_member_uses_all_features() -> None:
    ens = WeakClassifierEnsemble(10, 4, num_members=1, subspace=0.2)
    assert torch.equal(ens.masks, torch.ones(1, 10))
    assert ens(torch.randn(3, 10)).shape == (1, 3, 4)


@pytest.mark.parametrize("kwargs,match", [
    ({"num_members": 0}, "num_members"),
    ({"subspace": 0.0}, "subspace"),
    ({"subspace": 1.5}, "subspace"),
    ({"subspace": -0.1}, "subspace"),
])
def test_ensemble_invalid_arguments(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WeakClassifierEnsemble(8, 3, **kwargs)  # type: ignore[arg-type]


def test_ensemble_infer_equals_forward() -> None:
    torch.manual_seed(0)
    ensemble = WeakClassifierEnsemble(10, 3, num_members=4, hidden_dim=6, subspace=0.5).eval()
    x = torch.randn(7, 10)
    torch.testing.assert_close(ensemble.infer(x), ensemble(x), atol=1e-5, rtol=0)
