"""Unit tests of :class:`cberl_model.nn.DJVAEFusion` (``nn/djvae.py``).

PyG style (``test/nn/conv/``): tiny hand-built inputs, parametrised configs, output shapes
and ``repr``; shared inputs come from :mod:`tests.cberl_model.nn_helpers`.
"""

from __future__ import annotations

import math

import pytest
import torch

from cberl_model.nn import (
    DJVAEFusion,
)
from tests.cberl_model.nn_helpers import (
    ALL_DIMS,
    MODALITY_SETS,
    fusion_inputs,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("modalities", MODALITY_SETS)
@pytest.mark.parametrize("latent_dim", [4, 16])
def test_djvae_fusion_shapes(modalities: tuple[str, ...], latent_dim: int) -> None:
    dims = {m: ALL_DIMS[m] for m in modalities}
    fusion = DJVAEFusion(dims, latent_dim=latent_dim, hidden_dim=8, dropout=0.0)
    assert repr(fusion) == f"DJVAEFusion({dims}, latent_dim={latent_dim})"
    features, present = fusion_inputs(dims, 5)
    out = fusion.eval()(features, present)
    for t in (out.z, out.mu, out.logvar):
        assert t.shape == (5, latent_dim)
    assert fusion.reconstruction_loss(out.z, features, present).dim() == 0


def test_djvae_fusion_needs_a_modality() -> None:
    with pytest.raises(ValueError, match="at least one modality"):
        DJVAEFusion({})


def test_djvae_node_without_modalities_gets_the_prior() -> None:
    dims = {"text": 12, "audio": 6}
    fusion = DJVAEFusion(dims, latent_dim=8, hidden_dim=16, dropout=0.0).eval()
    features, present = fusion_inputs(dims, 4)
    present["text"][2] = present["audio"][2] = False
    out = fusion(features, present)
    assert torch.equal(out.mu[2], torch.zeros(8))
    assert torch.allclose(out.logvar[2].exp(), torch.ones(8))
    assert torch.equal(out.z[2], torch.zeros(8))
    # The other nodes have a posterior tighter than the prior.
    assert (out.logvar[[0, 1, 3]] < 0).all()


def test_djvae_absent_modality_is_ignored() -> None:
    dims = {"text": 12, "audio": 6}
    fusion = DJVAEFusion(dims, latent_dim=8, hidden_dim=16, dropout=0.0).eval()
    features, present = fusion_inputs(dims, 6)
    present["audio"][:] = False
    out = fusion(features, present)
    # Changing the (absent) audio features changes nothing.
    features_b = dict(features, audio=100.0 * torch.randn(6, 6))
    out_b = fusion(features_b, present)
    assert torch.equal(out.mu, out_b.mu) and torch.equal(out.logvar, out_b.logvar)
    # And the result is exactly the product of the text expert with the N(0, I) prior.
    mu_t, logvar_t = fusion.encoders["text"](features["text"]).chunk(2, dim=-1)
    precision = torch.exp(-logvar_t.clamp(-8.0, 8.0))
    assert torch.allclose(out.mu, precision * mu_t / (1 + precision), atol=1e-6)
    assert torch.allclose(out.logvar, -torch.log1p(precision), atol=1e-6)
    # Present audio does move the latent (so the comparison above is meaningful).
    present["audio"][:] = True
    assert not torch.allclose(fusion(features, present).mu, out.mu)


def test_djvae_eval_deterministic_train_samples() -> None:
    dims = {"text": 12, "audio": 6}
    fusion = DJVAEFusion(dims, latent_dim=8, hidden_dim=16, dropout=0.0)
    features, present = fusion_inputs(dims, 5)
    fusion.eval()
    a, b = fusion(features, present), fusion(features, present)
    assert torch.equal(a.z, b.z) and torch.equal(a.z, a.mu)
    fusion.train()
    torch.manual_seed(0)
    c = fusion(features, present)
    d = fusion(features, present)
    assert not torch.allclose(c.z, c.mu)
    assert not torch.allclose(c.z, d.z)
    assert torch.allclose(c.mu, a.mu, atol=1e-6)  # dropout 0: only z is random


@pytest.mark.parametrize("modalities", MODALITY_SETS)
def test_djvae_kl_nonnegative(modalities: tuple[str, ...]) -> None:
    dims = {m: ALL_DIMS[m] for m in modalities}
    fusion = DJVAEFusion(dims, latent_dim=8, hidden_dim=16, dropout=0.0).eval()
    features, present = fusion_inputs(dims, 10, seed=3)
    features = {m: 5 * x for m, x in features.items()}
    present = {m: torch.arange(10) % (i + 2) != 0 for i, m in enumerate(dims)}
    out = fusion(features, present)
    kl = out.kl()
    assert kl.dim() == 0 and kl.item() >= 0.0 and math.isfinite(kl.item())
    # Exactly zero at the prior (no modality anywhere).
    prior = fusion(features, {m: torch.zeros(10, dtype=torch.bool) for m in dims})
    assert prior.kl().abs().item() < 1e-6
