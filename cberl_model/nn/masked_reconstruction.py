"""Masked-node reconstruction: CBERL's auxiliary task of the parallel multitask learning."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MaskedReconstruction(nn.Module):
    r"""Hides random context nodes and asks the graph to reconstruct their inputs.

    A masked node's fused features are replaced by a learned ``[MASK]`` vector before the
    context layers; a per-modality linear head then predicts the node's (normalised) input
    features from its contextual state. The error on masked nodes,

    .. math:: \mathcal L_{rec} = \frac{1}{|M|} \sum_{i \in M} \sum_m \|g_m(h_i) - x_{i,m}\|^2 / d_m,

    teaches the context layers what an utterance is likely to contain given its
    neighbours, which regularises the minority-class boundaries. Nodes whose emotion is
    being predicted are masked at their own, usually lower, rate ``target_mask_rate``: the
    classifier must then label them from context alone, which keeps the context layers
    useful even when the node's own features are very predictive on the training split.

    Args:
        fused_dim: Size of the fused node vector that gets masked.
        context_dim: Size of the contextual node state the heads read.
        target_dims: Input feature dimension per modality to reconstruct.
        mask_rate: Probability that a non-target node is masked while training.
        target_mask_rate: Probability that a target node is masked while training.

    Shapes:
        - mask: ``fused`` ``(N, fused_dim)``, ``targets`` bool ``(N,)`` ->
          ``(masked fused (N, fused_dim), mask (N,) bool)``.
        - loss: ``context`` ``(N, context_dim)`` -> scalar.
    """

    def __init__(self, fused_dim: int, context_dim: int, target_dims: dict[str, int],
                 mask_rate: float = 0.15, target_mask_rate: float = 0.0) -> None:
        super().__init__()
        for name, rate in (("mask_rate", mask_rate), ("target_mask_rate", target_mask_rate)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"MaskedReconstruction {name} must be in [0, 1), got {rate}.")
        self.mask_rate = mask_rate
        self.target_mask_rate = target_mask_rate
        self.mask_token = nn.Parameter(torch.zeros(fused_dim))
        self.heads = nn.ModuleDict({m: nn.Linear(context_dim, d) for m, d in target_dims.items()})
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.mask_token, std=0.02)
        for head in self.heads.values():
            head.reset_parameters()

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(mask_rate={self.mask_rate}, "
                f"target_mask_rate={self.target_mask_rate}, heads={list(self.heads)})")

    def mask(self, fused: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Replace random nodes by the mask vector (training only).

        Context nodes are masked with probability ``mask_rate``, target nodes (``targets``
        is a bool ``(N,)``) with probability ``target_mask_rate``.
        """
        if not self.training or (self.mask_rate == 0.0 and self.target_mask_rate == 0.0):
            return fused, torch.zeros_like(targets)
        rate = torch.where(targets, self.target_mask_rate, self.mask_rate)
        mask = torch.rand(fused.size(0), device=fused.device) < rate
        return torch.where(mask.unsqueeze(-1), self.mask_token.expand_as(fused), fused), mask

    def loss(self, context: Tensor, mask: Tensor, features: dict[str, Tensor],
             present: dict[str, Tensor]) -> Tensor:
        """Mean squared error of the reconstructed inputs on masked nodes."""
        losses = []
        for m, head in self.heads.items():
            rows = mask & present[m]
            if rows.any():
                losses.append(((head(context[rows]) - features[m][rows]) ** 2).mean())
        return torch.stack(losses).mean() if losses else context.new_zeros(())
