"""Checks that synthetic samples are what they claim: the intended class, and not copies.

Used by the tests (on small synthetic data) and reported by the ablation benchmark (on
real features), so the same two numbers describe a GAN everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict
from sklearn.neighbors import NearestNeighbors


@dataclass(frozen=True)
class SyntheticDiagnostics:
    """How a set of synthetic samples relates to the real training samples.

    Attributes:
        intended_rate: Fraction of synthetic samples that an independent classifier
            (logistic regression fitted on the real samples) labels as intended.
        real_recall: Recall of such a classifier on real samples of the same classes that
            it was not fitted on (3-fold cross-validation), weighted like the synthetic
            ones: how recognisable real data of those classes is.
        min_nn_distance: Smallest distance from a synthetic sample to any real sample.
        median_nn_distance: Median of those nearest-neighbour distances.
        median_real_nn_distance: Median distance from a real sample of those classes to
            its nearest *other* real sample: the scale a non-copy should reach.
    """

    intended_rate: float
    real_recall: float
    min_nn_distance: float
    median_nn_distance: float
    median_real_nn_distance: float


def diagnose(real: np.ndarray, real_labels: np.ndarray, synthetic: np.ndarray,
             synthetic_labels: np.ndarray, seed: int = 0) -> SyntheticDiagnostics:
    """Score synthetic samples against real ones (rows = samples, features concatenated).

    Distances are Euclidean in the real samples' standardised space. A dimension that is
    (nearly) constant in the real samples is scaled by a floor (1% of the median
    dimension's spread) rather than by its own tiny spread, which would blow any
    synthetic deviation there up to dominate, or overflow, every distance.
    """
    mean, std = real.mean(0), real.std(0)
    scale = np.maximum(std, 0.01 * np.median(std) + 1e-12)
    real_s, synthetic_s = (real - mean) / scale, (synthetic - mean) / scale
    classifier = LogisticRegression(max_iter=2000, random_state=seed).fit(real_s, real_labels)
    intended = float(np.mean(classifier.predict(synthetic_s) == synthetic_labels))
    # Held-out real recall, weighted by how many synthetic samples each class got.
    predicted = cross_val_predict(LogisticRegression(max_iter=2000, random_state=seed), real_s,
                                  real_labels, cv=3)
    weights = np.bincount(synthetic_labels, minlength=real_labels.max() + 1)
    recalls = [np.mean(predicted[real_labels == c] == c) for c in np.flatnonzero(weights)]
    real_recall = float(np.average(recalls, weights=weights[weights > 0]))
    to_real, _ = NearestNeighbors(n_neighbors=1).fit(real_s).kneighbors(synthetic_s)
    same = np.isin(real_labels, np.flatnonzero(weights))
    within, _ = NearestNeighbors(n_neighbors=2).fit(real_s).kneighbors(real_s[same])
    return SyntheticDiagnostics(
        intended_rate=intended, real_recall=real_recall,
        min_nn_distance=float(to_real.min()), median_nn_distance=float(np.median(to_real)),
        median_real_nn_distance=float(np.median(within[:, 1])))
