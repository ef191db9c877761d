"""Imbalance levers that act on the training data: oversampling, SMOTE and CBERL's GAN.

Every method here makes *synthetic minority utterances* and places them into training
conversations the same way (:mod:`cberl_model.augment.placement`), so the methods differ
only in where a synthetic sample's features come from:

* :mod:`~cberl_model.augment.oversample`: a copy of a real minority utterance;
* :mod:`~cberl_model.augment.smote`: an interpolation between a real minority utterance
  and one of its same-class neighbours;
* :mod:`~cberl_model.augment.gan`: the multimodal GAN of CBERL translating a real
  utterance of another class into the minority class.

The registry that the trainer's ``--augment`` flag reads is
:mod:`cberl_model.train.augment`.
"""

from cberl_model.augment.gan import GANConfig, MultimodalGANAugmenter, gan_augment
from cberl_model.augment.oversample import oversample_augment
from cberl_model.augment.placement import class_deficits, place_synthetic
from cberl_model.augment.smote import smote_augment, smote_samples

__all__ = [
    "GANConfig",
    "MultimodalGANAugmenter",
    "class_deficits",
    "gan_augment",
    "oversample_augment",
    "place_synthetic",
    "smote_augment",
    "smote_samples",
]
