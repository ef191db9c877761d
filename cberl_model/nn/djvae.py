"""Deep joint VAE fusion of whichever modalities an utterance has."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class DJVAEFusion(nn.Module):
    r"""Fuses per-modality features into one Gaussian latent (CBERL's DJVAE).

    Each modality :math:`m` has an encoder to a Gaussian :math:`q_m(z|x_m)=\mathcal N(\mu_m,
    \sigma_m^2)`; the joint posterior is the product of experts of the modalities present
    and a standard-normal prior expert,

    .. math::
        \sigma^{-2} = 1 + \sum_{m \in P} \sigma_m^{-2}, \qquad
        \mu = \sigma^2 \sum_{m \in P} \sigma_m^{-2} \mu_m,

    so a missing modality simply drops out of the product (a node with none falls back to
    the prior). Per-modality decoders reconstruct every present input from the joint
    sample; the training objective adds that reconstruction error and
    :math:`\mathrm{KL}(q(z|x)\,\|\,\mathcal N(0, I))`.

    Args:
        input_dims: Feature dimension per modality name (e.g. ``{"text": 384}``).
        latent_dim: Size of :math:`z`.
        hidden_dim: Width of the encoder and decoder MLPs.
        dropout: Dropout on encoder inputs.

    Shapes:
        - inputs: ``features[m]`` of shape ``(N, input_dims[m])``, ``present[m]`` bool ``(N,)``.
        - output: :class:`FusionOutput` with ``z`` of shape ``(N, latent_dim)``.
    """

    def __init__(self, input_dims: dict[str, int], latent_dim: int = 256, hidden_dim: int = 384,
                 dropout: float = 0.2) -> None:
        super().__init__()
        if not input_dims:
            raise ValueError("DJVAEFusion needs at least one modality in input_dims.")
        self.input_dims = dict(input_dims)
        self.latent_dim = latent_dim
        self.encoders = nn.ModuleDict({
            m: nn.Sequential(nn.Dropout(dropout), nn.Linear(d, hidden_dim), nn.GELU(),
                             nn.Linear(hidden_dim, 2 * latent_dim))
            for m, d in input_dims.items()})
        self.decoders = nn.ModuleDict({
            m: nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, d))
            for m, d in input_dims.items()})
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.input_dims}, latent_dim={self.latent_dim})"

    def forward(self, features: dict[str, Tensor], present: dict[str, Tensor]) -> FusionOutput:
        precision_sum: Tensor | None = None
        weighted_mu: Tensor | None = None
        for m, encoder in self.encoders.items():
            # 1. Each present modality proposes a Gaussian; absent ones get zero precision.
            mu_m, logvar_m = encoder(features[m]).chunk(2, dim=-1)
            precision_m = torch.exp(-logvar_m.clamp(-8.0, 8.0)) * present[m].unsqueeze(-1)
            precision_sum = precision_m if precision_sum is None else precision_sum + precision_m
            term = precision_m * mu_m
            weighted_mu = term if weighted_mu is None else weighted_mu + term
        assert precision_sum is not None and weighted_mu is not None
        # 2. Product of experts with the N(0, I) prior (precision 1, mean 0).
        variance = 1.0 / (1.0 + precision_sum)
        mu = variance * weighted_mu
        logvar = torch.log(variance)
        # 3. Reparameterised sample while training; the mean at inference (deterministic).
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return FusionOutput(z=z, mu=mu, logvar=logvar)

    def reconstruction_loss(self, z: Tensor, features: dict[str, Tensor],
                            present: dict[str, Tensor]) -> Tensor:
        """Mean squared reconstruction error of every present modality from ``z``."""
        losses = []
        for m, decoder in self.decoders.items():
            mask = present[m]
            if mask.any():
                losses.append(((decoder(z[mask]) - features[m][mask]) ** 2).mean())
        return torch.stack(losses).mean() if losses else z.new_zeros(())


class FusionOutput:
    """The joint latent sample and its Gaussian parameters (``logvar`` None: deterministic)."""

    __slots__ = ("logvar", "mu", "z")

    def __init__(self, z: Tensor, mu: Tensor, logvar: Tensor | None) -> None:
        self.z, self.mu, self.logvar = z, mu, logvar

    def kl(self) -> Tensor:
        """KL divergence to the standard normal, averaged over nodes (zero if deterministic)."""
        if self.logvar is None:
            return self.z.new_zeros(())
        return (-0.5 * (1 + self.logvar - self.mu ** 2 - self.logvar.exp()).sum(-1)).mean()
