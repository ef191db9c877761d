"""Training-set augmentation stage: where CBERL's multimodal GAN plugs in.

An augmentation receives the training conversations (as feature matrices) and returns the
conversations to train on, for example the originals plus synthetic minority utterances.
It runs after featurisation and before the network is trained, so it sees exactly the
features the model sees.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cberl_model.windows import ConversationFeatures

Augmentation = Callable[[list[ConversationFeatures], np.random.Generator],
                        list[ConversationFeatures]]


def no_augmentation(conversations: list[ConversationFeatures],
                    rng: np.random.Generator) -> list[ConversationFeatures]:
    """The identity: train on the corpus as it is."""
    return conversations


AUGMENTATIONS: dict[str, Augmentation] = {"none": no_augmentation}


def get_augmentation(name: str) -> Augmentation:
    """Look up an augmentation by name.

    Raises:
        ValueError: If no augmentation has that name.
    """
    try:
        return AUGMENTATIONS[name]
    except KeyError:
        raise ValueError(f"unknown augmentation {name!r}; known: {', '.join(AUGMENTATIONS)}") from None
