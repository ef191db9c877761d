"""The networks of CBERL's multimodal GAN (``reference/cberl_gan.png``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _mlp(in_dim: int, hidden_dim: int, out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.LeakyReLU(0.2), nn.Dropout(dropout),
                         nn.Linear(hidden_dim, hidden_dim), nn.LeakyReLU(0.2), nn.Dropout(dropout),
                         nn.Linear(hidden_dim, out_dim))


class ConditionalGenerator(nn.Module):
    r"""Translates a sample to a class: :math:`G(x, z, y) = f([x \| z \| e_y])`.

    The output is not ``x`` plus a residual: the generator may move far from its source,
    and the identity (cycle) loss is what keeps the source's individuality in it.

    Args:
        dim: Feature size (input and output).
        num_classes: Number of emotions.
        noise_dim: Size of the noise :math:`z` (``0`` for a deterministic map).
        hidden_dim: MLP width.
        label_dim: Size of the label embedding :math:`e_y`.

    Shapes:
        - input: ``x`` ``(N, dim)``, ``y`` ``(N,)``, ``noise`` ``(N, noise_dim)``.
        - output: ``(N, dim)``.
    """

    def __init__(self, dim: int, num_classes: int, noise_dim: int, hidden_dim: int,
                 label_dim: int) -> None:
        super().__init__()
        self.dim, self.noise_dim = dim, noise_dim
        self.label = nn.Embedding(num_classes, label_dim)
        self.net = _mlp(dim + noise_dim + label_dim, hidden_dim, dim)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(dim={self.dim}, noise_dim={self.noise_dim})"

    def forward(self, x: Tensor, y: Tensor, noise: Tensor) -> Tensor:
        return self.net(torch.cat([x, noise, self.label(y)], -1))


class ConditionalDiscriminator(nn.Module):
    r"""Scores whether ``x`` is a real sample of class ``y``: :math:`D(x, y) = f([x \| e_y])`.

    Input dropout keeps it from memorising the few real samples of a minority class.

    Shapes:
        - input: ``x`` ``(N, dim)``, ``y`` ``(N,)``.
        - output: ``(N,)`` (least-squares GAN score, 1 = real).
    """

    def __init__(self, dim: int, num_classes: int, hidden_dim: int, label_dim: int,
                 dropout: float = 0.3) -> None:
        super().__init__()
        self.dim = dim
        self.label = nn.Embedding(num_classes, label_dim)
        self.net = _mlp(dim + label_dim, hidden_dim, 1, dropout)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(dim={self.dim})"

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.net(torch.cat([x, self.label(y)], -1)).squeeze(-1)


class MultimodalGAN(nn.Module):
    r"""CBERL's multimodal GAN over any non-empty set of modalities.

    Per modality :math:`m`: a source-to-target generator :math:`G^m_{S\to T}` with a
    discriminator :math:`D_m` (loss :math:`\zeta_{GAN\_T}`) and a target-to-source
    generator :math:`G^m_{T\to S}` whose reconstruction :math:`Z'_m` of the source is held
    to :math:`Z_m` (loss :math:`\zeta_{identity}`). Over all modalities together: a joint
    discriminator :math:`D_{T,F}` on the concatenated generated sample (loss
    :math:`\zeta_{GAN\_S}`) and an emotion classifier whose cross-entropy on generated
    samples (:math:`\zeta_C`) makes them carry their intended label. With one modality the
    joint discriminator sees the same vector as :math:`D_m`; it is kept so that one code
    path serves one, two or three modalities.

    Args:
        dims: Feature size per modality.
        num_classes: Number of emotions.
        noise_dim / hidden_dim / label_dim: Generator noise, MLP width, label embedding.

    Shapes:
        - :meth:`translate`: ``{m: (N, d_m)}``, targets ``(N,)``, noise ``(N, noise_dim)`` ->
          ``{m: (N, d_m)}``.
    """

    def __init__(self, dims: dict[str, int], num_classes: int, noise_dim: int = 32,
                 hidden_dim: int = 256, label_dim: int = 16) -> None:
        super().__init__()
        if not dims:
            raise ValueError("MultimodalGAN needs at least one modality in dims.")
        self.dims, self.num_classes, self.noise_dim = dict(dims), num_classes, noise_dim
        joint = sum(dims.values())
        self.source_to_target = nn.ModuleDict({
            m: ConditionalGenerator(d, num_classes, noise_dim, hidden_dim, label_dim)
            for m, d in dims.items()})
        self.target_to_source = nn.ModuleDict({
            m: ConditionalGenerator(d, num_classes, 0, hidden_dim, label_dim)
            for m, d in dims.items()})
        self.discriminators = nn.ModuleDict({
            m: ConditionalDiscriminator(d, num_classes, hidden_dim, label_dim)
            for m, d in dims.items()})
        self.joint_discriminator = ConditionalDiscriminator(joint, num_classes, hidden_dim,
                                                            label_dim)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(joint, hidden_dim),
                                        nn.LeakyReLU(0.2), nn.Linear(hidden_dim, num_classes))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.dims}, num_classes={self.num_classes})"

    def generator_parameters(self) -> list[nn.Parameter]:
        return [*self.source_to_target.parameters(), *self.target_to_source.parameters()]

    def critic_parameters(self) -> list[nn.Parameter]:
        """Discriminators and the emotion classifier (trained on real data)."""
        return [*self.discriminators.parameters(), *self.joint_discriminator.parameters(),
                *self.classifier.parameters()]

    def translate(self, x: dict[str, Tensor], target: Tensor, noise: Tensor) -> dict[str, Tensor]:
        """:math:`G_{S\\to T}` of every modality, all conditioned on the same target and noise."""
        return {m: g(x[m], target, noise) for m, g in self.source_to_target.items()}

    def back_translate(self, x: dict[str, Tensor], source: Tensor) -> dict[str, Tensor]:
        """:math:`G_{T\\to S}` of every modality (deterministic)."""
        empty = next(iter(x.values())).new_zeros(len(source), 0)
        return {m: g(x[m], source, empty) for m, g in self.target_to_source.items()}

    def joint(self, x: dict[str, Tensor]) -> Tensor:
        return torch.cat([x[m] for m in self.dims], -1)
