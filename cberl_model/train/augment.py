"""The imbalance stage of the trainer: ``--augment none|oversample|smote|gan|classweight``.

An entry receives the training conversations (as feature matrices, after featurisation)
and returns the conversations to train on: the originals plus synthetic minority
utterances placed by :mod:`cberl_model.augment.placement`. It runs before the network is
trained, so it sees exactly the features the model sees; dev and test data never pass
through it. ``classweight`` is the loss-level baseline kept behind the same flag so every
imbalance lever is compared the same way: it leaves the data alone and trains the network
with balanced class weights (:math:`(N/n_c)^1` instead of the recipe's
``class_weight_power``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cberl_model.augment import GANConfig, gan_augment, oversample_augment, smote_augment
from cberl_model.runtime import ConfigError
from cberl_model.windows import ConversationFeatures


@dataclass(frozen=True)
class AugmentSettings:
    """What every augmentation may need from the run configuration.

    Attributes:
        num_classes: Number of emotions.
        ratio: Each class is topped up to ``ratio`` times the largest class count.
        gan_epochs: Training epochs of the GAN.
    """

    num_classes: int
    ratio: float = 0.25
    gan_epochs: int = 30


Augmentation = Callable[[list[ConversationFeatures], AugmentSettings, np.random.Generator],
                        list[ConversationFeatures]]


@dataclass(frozen=True)
class ImbalanceMethod:
    """One ``--augment`` choice.

    Attributes:
        augment: The data transformation.
        class_weight_power: When set, the network's loss uses class weights
            :math:`(N/n_c)^p` with this ``p`` instead of the run's ``class_weight_power``.
    """

    augment: Augmentation
    class_weight_power: float | None = None


def no_augmentation(conversations: list[ConversationFeatures], settings: AugmentSettings,
                    rng: np.random.Generator) -> list[ConversationFeatures]:
    """The identity: train on the corpus as it is."""
    return conversations


AUGMENTATIONS: dict[str, ImbalanceMethod] = {
    "none": ImbalanceMethod(no_augmentation),
    "oversample": ImbalanceMethod(
        lambda convs, s, rng: oversample_augment(convs, s.num_classes, s.ratio, rng)),
    "smote": ImbalanceMethod(
        lambda convs, s, rng: smote_augment(convs, s.num_classes, s.ratio, rng)),
    "gan": ImbalanceMethod(
        lambda convs, s, rng: gan_augment(convs, s.num_classes, s.ratio, rng,
                                          GANConfig(epochs=s.gan_epochs))),
    "classweight": ImbalanceMethod(no_augmentation, class_weight_power=1.0),
}


def get_augmentation(name: str) -> ImbalanceMethod:
    """Look up an imbalance method by name.

    Raises:
        ConfigError: If no method has that name.
    """
    try:
        return AUGMENTATIONS[name]
    except KeyError:
        raise ConfigError(f"unknown augmentation {name!r}; known: {', '.join(AUGMENTATIONS)}") from None
