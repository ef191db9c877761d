"""An ensemble of weak classifiers, each on a random subspace of the features."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cberl_model.nn.inference_cache import cached


class WeakClassifierEnsemble(nn.Module):
    r"""CBERL's emotion classifier: several shallow classifiers whose probabilities are averaged.

    Member :math:`k` sees a fixed random subset :math:`S_k` of the input features (random
    subspace method) and is a one-hidden-layer MLP; the prediction is
    :math:`\bar p = \frac{1}{K} \sum_k \mathrm{softmax}(f_k(x_{S_k}))`. Each member is trained
    on its own logits, so members disagree where the data is ambiguous (often the minority
    classes) and the average is better calibrated than one deep head.

    Args:
        input_dim: Feature size.
        num_classes: Number of emotions.
        num_members: Ensemble size ``K`` (``1`` gives a single classifier on all features).
        hidden_dim: Hidden width of each member.
        subspace: Fraction of features each member sees (ignored when ``K == 1``).
        dropout: Input dropout of each member.
        seed: Seed of the subspace draw (stored, so the masks are reproducible).

    Shapes:
        - input: ``(N, input_dim)``.
        - output: logits ``(K, N, num_classes)``.
    """

    def __init__(self, input_dim: int, num_classes: int, num_members: int = 5,
                 hidden_dim: int = 128, subspace: float = 0.75, dropout: float = 0.3,
                 seed: int = 0) -> None:
        super().__init__()
        if num_members < 1:
            raise ValueError(f"WeakClassifierEnsemble needs num_members >= 1, got {num_members}.")
        if not 0.0 < subspace <= 1.0:
            raise ValueError(f"WeakClassifierEnsemble subspace must be in (0, 1], got {subspace}.")
        self.input_dim, self.num_classes, self.num_members = input_dim, num_classes, num_members
        generator = torch.Generator().manual_seed(seed)
        keep = max(1, round(subspace * input_dim)) if num_members > 1 else input_dim
        masks = torch.zeros(num_members, input_dim)
        for k in range(num_members):
            masks[k, torch.randperm(input_dim, generator=generator)[:keep]] = 1.0
        self.register_buffer("masks", masks)
        self.members = nn.ModuleList(
            nn.Sequential(nn.Dropout(dropout), nn.Linear(input_dim, hidden_dim), nn.GELU(),
                          nn.Linear(hidden_dim, num_classes))
            for _ in range(num_members))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for member in self.members:
            for layer in member:
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.input_dim}, {self.num_classes}, "
                f"num_members={self.num_members})")

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([m(x * mask) for m, mask in zip(self.members, self.masks, strict=True)])

    @torch.no_grad()
    def infer(self, x: Tensor) -> Tensor:
        """Eval-mode :meth:`forward` in two batched products instead of ``2 K`` small ones.

        Each member's subspace mask is folded into its first layer's weight columns
        (``W (x * m) = (W * m) x``), the first layers run as one ``(N, K * hidden)`` matrix
        product and the second layers as one batched product.
        """
        w1, b1, w2, b2 = cached(self, "stacked", [*self.parameters(), self.masks], self._stacked)
        hidden = torch.nn.functional.gelu(torch.addmm(b1, x, w1))  # (N, K * hidden)
        hidden = hidden.view(x.size(0), self.num_members, -1).transpose(0, 1)  # (K, N, hidden)
        return torch.baddbmm(b2, hidden, w2)

    def _stacked(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Masked first layers ``(in, K * hidden)`` + bias, second layers ``(K, hidden, C)`` + bias."""
        with torch.no_grad():
            first = [m[1] for m in self.members]
            second = [m[3] for m in self.members]
            w1 = torch.cat([layer.weight * mask for layer, mask in zip(first, self.masks, strict=True)])
            b1 = torch.cat([layer.bias for layer in first])
            w2 = torch.stack([layer.weight for layer in second]).transpose(1, 2).contiguous()
            b2 = torch.stack([layer.bias for layer in second]).unsqueeze(1)
            return w1.T.contiguous(), b1, w2, b2

    @staticmethod
    def probabilities(logits: Tensor) -> Tensor:
        """Average of the members' softmax outputs, ``(K, N, C) -> (N, C)``."""
        return logits.softmax(-1).mean(0)
