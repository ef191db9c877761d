"""Concatenation fusion: the ablation's stand-in for DJVAE."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cberl_model.nn.djvae import FusionOutput


class ConcatFusion(nn.Module):
    r"""Fuses modalities by concatenation and a linear projection (no latent model).

    .. math:: z = W [x^{t} \odot p^{t} \| x^{a} \odot p^{a} \| x^{v} \odot p^{v}] + b

    where :math:`p^m \in \{0, 1\}` says whether the node has modality :math:`m` (an absent
    modality contributes zeros). It has the interface of :class:`DJVAEFusion` so the
    network can swap one for the other, but no decoders and no KL term: the ablation
    "concatenation instead of DJVAE" removes the whole VAE objective.

    Args:
        input_dims: Feature dimension per modality name.
        latent_dim: Size of :math:`z`.
        dropout: Dropout on the concatenated input.

    Shapes:
        - inputs: ``features[m]`` of shape ``(N, input_dims[m])``, ``present[m]`` bool ``(N,)``.
        - output: :class:`FusionOutput` with ``z`` of shape ``(N, latent_dim)`` and no variance.
    """

    def __init__(self, input_dims: dict[str, int], latent_dim: int = 256,
                 dropout: float = 0.2) -> None:
        super().__init__()
        if not input_dims:
            raise ValueError("ConcatFusion needs at least one modality in input_dims.")
        self.input_dims = dict(input_dims)
        self.latent_dim = latent_dim
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(sum(input_dims.values()), latent_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.project.reset_parameters()

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.input_dims}, latent_dim={self.latent_dim})"

    def forward(self, features: dict[str, Tensor], present: dict[str, Tensor]) -> FusionOutput:
        parts = [features[m] * present[m].unsqueeze(-1) for m in self.input_dims]
        z = self.project(self.dropout(torch.cat(parts, -1)))
        return FusionOutput(z=z, mu=z, logvar=None)

    def reconstruction_loss(self, z: Tensor, features: dict[str, Tensor],
                            present: dict[str, Tensor]) -> Tensor:
        """No decoders: zero (kept so the trainer treats both fusions alike)."""
        return z.new_zeros(())
