"""Focal loss: down-weights easy (mostly majority-class) examples."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn


class FocalLoss(nn.Module):
    r"""Focal loss of Lin et al. (2017), CBERL's loss-sensitivity lever.

    .. math::
        \mathcal L = -\frac{1}{\sum_i w_{y_i}} \sum_i w_{y_i} (1 - p_{i,y_i})^{\gamma}
        \log p_{i,y_i}

    With :math:`\gamma = 0` and no weights it is cross-entropy.

    Args:
        gamma: Focusing parameter (``>= 0``).
        weight: Optional per-class weights ``(C,)``.

    Shapes:
        - input: logits ``(N, C)``, target ``(N,)`` class indices.
        - output: scalar.
    """

    def __init__(self, gamma: float = 2.0, weight: Tensor | None = None) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"FocalLoss gamma must be >= 0, got {gamma}.")
        self.gamma = gamma
        self.register_buffer("weight", weight.clone().float() if weight is not None else None)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(gamma={self.gamma}, weighted={self.weight is not None})"

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        log_p = F.log_softmax(logits, dim=-1).gather(1, target.unsqueeze(1)).squeeze(1)
        focal = (1.0 - log_p.exp()).clamp(min=0.0) ** self.gamma * -log_p
        if self.weight is None:
            return focal.mean()
        w = self.weight[target]
        return (w * focal).sum() / w.sum().clamp(min=torch.finfo(w.dtype).tiny)
