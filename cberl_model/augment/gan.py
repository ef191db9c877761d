"""Training CBERL's multimodal GAN and using it to synthesise minority utterances.

The GAN works in the model's input feature space (the vectors the featurisers produce,
per modality), after featurisation and before the CBERL network is trained. It is fitted
on the training split's labelled utterances that have every modality (a sample whose
audio is missing teaches the audio generator nothing), with each modality standardised.

One step, with target classes :math:`t` drawn uniformly over the classes (so the few
real fear examples are seen as often as neutral ones) and source utterances :math:`x`
drawn uniformly from all rows (class :math:`s`):

* critics: each :math:`D_m` and the joint :math:`D_{T,F}` learn real class-:math:`t`
  samples vs :math:`G_{S\\to T}(x, z, t)` (least-squares GAN), and the emotion classifier
  learns the real samples' classes;
* generators: fool every :math:`D_m` and :math:`D_{T,F}`, be classified as :math:`t`, and
  let :math:`G_{T\\to S}(\\cdot, s)` recover :math:`x` (identity loss, L1).

Synthetic utterances are placed by :mod:`cberl_model.augment.placement`: the source is a
random complete utterance of another class, the host a real utterance of the target class.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from cberl_model.augment.diagnostics import SyntheticDiagnostics, diagnose
from cberl_model.augment.gan_networks import MultimodalGAN
from cberl_model.augment.placement import (
    UtteranceIndex,
    choose_hosts,
    class_deficits,
    place_synthetic,
)
from cberl_model.runtime import ConfigError
from cberl_model.windows import ConversationFeatures

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GANConfig:
    """Hyper-parameters of the GAN and its training.

    Attributes:
        epochs: Passes over the training rows (steps = epochs * rows / batch_size).
        batch_size: Samples per step.
        lr: Adam learning rate of generators and critics.
        noise_dim / hidden_dim / label_dim: Network sizes.
        identity_weight: Weight of the identity (cycle) loss in the generator objective.
        classification_weight: Weight of the emotion classifier's loss on generated samples.
        joint_weight: Weight of the joint discriminator (GAN_S) relative to each D_m.
    """

    epochs: int = 30
    batch_size: int = 128
    lr: float = 2e-4
    noise_dim: int = 32
    hidden_dim: int = 256
    label_dim: int = 16
    identity_weight: float = 2.0
    classification_weight: float = 1.0
    joint_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError(f"GANConfig needs epochs >= 1 and batch_size >= 2, got "
                             f"{self.epochs} and {self.batch_size}.")


def _least_squares(score: torch.Tensor, real: bool) -> torch.Tensor:
    return ((score - (1.0 if real else 0.0)) ** 2).mean()


class MultimodalGANAugmenter:
    """A fitted :class:`MultimodalGAN` plus the standardisation it was trained in.

    Args:
        features: Real rows ``{m: (U, d_m)}``, every modality present.
        labels: Their classes ``(U,)``.
        num_classes: Number of emotions (classes without rows are never targets).
        config: Training settings.
        seed: Seed of the networks' initialisation and of the training draws.
    """

    def __init__(self, features: dict[str, np.ndarray], labels: np.ndarray, num_classes: int,
                 config: GANConfig, seed: int) -> None:
        if not features or len(labels) < 2:
            raise ValueError("the GAN needs at least two labelled utterances with every modality.")
        self.config = config
        self.mean = {m: x.mean(0) for m, x in features.items()}
        self.std = {m: x.std(0) + 1e-4 for m, x in features.items()}
        # Dimensions that are constant in the real data (some pooled encoder outputs are)
        # stay constant in generated samples: any variation there would mark them synthetic.
        self.constant = {m: x.std(0) < 1e-6 for m, x in features.items()}
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.gan = MultimodalGAN({m: x.shape[1] for m, x in features.items()}, num_classes,
                                 config.noise_dim, config.hidden_dim, config.label_dim)
        self.history = self._fit(self._standardise(features), torch.from_numpy(labels).long(),
                                 generator)

    def _standardise(self, features: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {m: torch.from_numpy(((x - self.mean[m]) / self.std[m]).astype(np.float32))
                for m, x in features.items()}

    def _noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.config.noise_dim, generator=generator)

    def _fit(self, x: dict[str, torch.Tensor], y: torch.Tensor,
             generator: torch.Generator) -> list[dict[str, float]]:
        """Alternate critic and generator steps; returns the per-epoch mean losses."""
        cfg, gan = self.config, self.gan
        classes = torch.unique(y)
        # Rows sorted by class: class c's rows are by_class[starts[c] : starts[c] + counts[c]].
        by_class = torch.argsort(y, stable=True)
        counts = torch.bincount(y, minlength=gan.num_classes)
        starts = torch.cumsum(counts, 0) - counts
        opt_g = torch.optim.Adam(gan.generator_parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(gan.critic_parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        steps = max(1, math.ceil(len(y) / cfg.batch_size))
        history = []
        gan.train()
        for epoch in range(cfg.epochs):
            sums = {"critic": 0.0, "adversarial": 0.0, "identity": 0.0, "classification": 0.0}
            for _ in range(steps):
                # 1. Targets uniform over classes; real samples of those classes; any sources.
                target = classes[torch.randint(len(classes), (cfg.batch_size,), generator=generator)]
                pick = (torch.rand(cfg.batch_size, generator=generator) * counts[target]).long()
                real_rows = by_class[starts[target] + pick]
                src_rows = torch.randint(len(y), (cfg.batch_size,), generator=generator)
                real = {m: v[real_rows] for m, v in x.items()}
                source = {m: v[src_rows] for m, v in x.items()}
                fake = gan.translate(source, target, self._noise(cfg.batch_size, generator))
                # 2. Critics: real vs generated per modality and jointly; classifier on real.
                d_loss = sum((_least_squares(d(real[m], target), True)
                              + _least_squares(d(fake[m].detach(), target), False))
                             for m, d in gan.discriminators.items())
                d_loss = d_loss + cfg.joint_weight * (
                    _least_squares(gan.joint_discriminator(gan.joint(real), target), True)
                    + _least_squares(gan.joint_discriminator(gan.joint(fake).detach(), target), False))
                d_loss = d_loss + F.cross_entropy(gan.classifier(gan.joint(real)), target)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                # 3. Generators: fool the critics, carry the label, keep the source recoverable.
                adversarial = sum(_least_squares(d(fake[m], target), True)
                                  for m, d in gan.discriminators.items())
                adversarial = adversarial + cfg.joint_weight * _least_squares(
                    gan.joint_discriminator(gan.joint(fake), target), True)
                back = gan.back_translate(fake, y[src_rows])
                identity = sum(F.l1_loss(back[m], source[m]) for m in gan.dims)
                classification = F.cross_entropy(gan.classifier(gan.joint(fake)), target)
                g_loss = (adversarial + cfg.identity_weight * identity
                          + cfg.classification_weight * classification)
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
                for key, value in (("critic", d_loss), ("adversarial", adversarial),
                                   ("identity", identity), ("classification", classification)):
                    sums[key] += value.item() / steps
            if not all(math.isfinite(v) for v in sums.values()):
                raise FloatingPointError(f"non-finite GAN loss at epoch {epoch + 1}: {sums}")
            history.append({"epoch": epoch + 1, **sums})
        gan.eval()
        log.info("GAN trained: %d epochs, last %s", cfg.epochs,
                 {k: round(v, 4) for k, v in history[-1].items()})
        return history

    @torch.no_grad()
    def generate(self, sources: dict[str, np.ndarray], targets: np.ndarray,
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Translate source rows ``{m: (S, d_m)}`` to the classes ``targets`` ``(S,)``.

        Returns:
            ``{m: (S, d_m)}`` in the original (not standardised) feature space.
        """
        x = self._standardise(sources)
        noise = torch.from_numpy(rng.standard_normal((len(targets), self.config.noise_dim))
                                 .astype(np.float32))
        fake = self.gan.translate(x, torch.from_numpy(targets).long(), noise)
        out = {m: (v.numpy() * self.std[m] + self.mean[m]).astype(np.float32) for m, v in fake.items()}
        for m, constant in self.constant.items():
            out[m][:, constant] = self.mean[m][constant]
        return out


def _diagnostics(feats: dict[str, np.ndarray], labels: np.ndarray, complete: np.ndarray,
                 samples: dict[str, np.ndarray], classes: np.ndarray,
                 rng: np.random.Generator, limit: int = 3000) -> SyntheticDiagnostics:
    """:func:`diagnose` on at most ``limit`` real and synthetic rows (seconds, not minutes)."""
    real = rng.permutation(complete)[:limit]
    fake = rng.permutation(len(classes))[:limit]
    return diagnose(np.concatenate([feats[m][real] for m in feats], 1), labels[real],
                    np.concatenate([samples[m][fake] for m in feats], 1), classes[fake])


def complete_rows(present: dict[str, np.ndarray]) -> np.ndarray:
    """Indices of rows that have every modality."""
    return np.flatnonzero(np.logical_and.reduce(list(present.values())))


def gan_augment(conversations: list[ConversationFeatures], num_classes: int, ratio: float,
                rng: np.random.Generator, config: GANConfig) -> list[ConversationFeatures]:
    """Top minority classes up to ``ratio * max count`` with GAN-translated utterances.

    Raises:
        ConfigError: If fewer than two labelled utterances have every modality (the corpus
            cannot be augmented with ``--augment gan``).
    """
    index = UtteranceIndex.of(conversations)
    feats, present = index.features(conversations)
    complete = complete_rows(present)
    if len(complete) < 2:
        raise ConfigError("--augment gan needs labelled training utterances with every modality; "
                          f"found {len(complete)}.")
    augmenter = MultimodalGANAugmenter({m: x[complete] for m, x in feats.items()},
                                       index.label[complete], num_classes, config,
                                       int(rng.integers(2**31)))
    hosts, classes = choose_hosts(index, class_deficits(index.label, num_classes, ratio), rng)
    # Sources: complete utterances of another class than the intended one (S -> T).
    sources = np.empty(len(classes), dtype=np.int64)
    for c in np.unique(classes):
        pool = complete[index.label[complete] != c]
        pool = pool if len(pool) else complete
        chosen = classes == c
        sources[chosen] = pool[rng.integers(len(pool), size=int(chosen.sum()))]
    samples = augmenter.generate({m: x[sources] for m, x in feats.items()}, classes, rng)
    log.info("GAN augmentation: %d synthetic utterances (%s per class)", len(classes),
             np.bincount(classes, minlength=num_classes).tolist())
    if len(classes):
        log.info("GAN samples vs real ones: %s", _diagnostics(feats, index.label, complete, samples,
                                                             classes, rng))
    return place_synthetic(conversations, index, hosts, classes, samples)
