"""SMOTE: synthetic minority samples by interpolation between same-class neighbours.

Chawla et al. (2002). A small numpy/scikit-learn implementation (imbalanced-learn is not a
dependency): for a minority sample :math:`x` and one of its ``k`` nearest same-class
neighbours :math:`x_{nn}`, :math:`\\tilde x = x + \\lambda (x_{nn} - x)` with
:math:`\\lambda \\sim U(0, 1)`. Every modality is interpolated with the same
:math:`\\lambda` and neighbour, found on the concatenated standardised features, so the
modalities of a synthetic utterance stay consistent.
"""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

from cberl_model.augment.placement import (
    UtteranceIndex,
    choose_hosts,
    class_deficits,
    place_synthetic,
)
from cberl_model.windows import ConversationFeatures


def _joint(features: dict[str, np.ndarray]) -> np.ndarray:
    """Concatenated features, each modality standardised so none dominates the distance."""
    parts = [(x - x.mean(0)) / (x.std(0) + 1e-6) / np.sqrt(x.shape[1]) for x in features.values()]
    return np.concatenate(parts, axis=1)


def smote_samples(features: dict[str, np.ndarray], labels: np.ndarray, seeds: np.ndarray,
                  k: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One interpolated sample per seed row, towards a random one of its ``k`` same-class neighbours.

    Args:
        features: ``{m: (U, d_m)}`` real rows.
        labels: Class of each row ``(U,)``.
        seeds: Row index of each synthetic sample's seed ``(S,)``.
        k: Neighbours to choose from (fewer when the class is smaller).
        rng: Random source.

    Returns:
        ``{m: (S, d_m)}``. A class with one example reproduces it (nothing to interpolate).
    """
    joint = _joint(features)
    partner = seeds.copy()
    for c in np.unique(labels[seeds]):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            continue
        neighbours = NearestNeighbors(n_neighbors=min(k, len(members) - 1) + 1).fit(joint[members])
        chosen = np.flatnonzero(labels[seeds] == c)
        _, near = neighbours.kneighbors(joint[seeds[chosen]])
        pick = rng.integers(1, near.shape[1], size=len(chosen))  # column 0 is the seed itself
        partner[chosen] = members[near[np.arange(len(chosen)), pick]]
    lam = rng.random(len(seeds))[:, None].astype(np.float32)
    return {m: x[seeds] + lam * (x[partner] - x[seeds]) for m, x in features.items()}


def smote_augment(conversations: list[ConversationFeatures], num_classes: int, ratio: float,
                  rng: np.random.Generator, k: int = 5) -> list[ConversationFeatures]:
    """Top minority classes up to ``ratio * max count`` with SMOTE samples.

    Each synthetic sample is hosted by its own seed utterance (its conversation is the
    context, see :mod:`cberl_model.augment.placement`).
    """
    index = UtteranceIndex.of(conversations)
    hosts, classes = choose_hosts(index, class_deficits(index.label, num_classes, ratio), rng)
    feats, _ = index.features(conversations)
    return place_synthetic(conversations, index, hosts, classes,
                           smote_samples(feats, index.label, hosts, k, rng))
