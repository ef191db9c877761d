"""The featurizers a model was trained with, built from its feature spec, for serving.

The streamer calls :meth:`FeaturizerSet.featurize` on each endpointed utterance and puts
the vectors into the Utterance event; the worker hands them to the model unchanged.

This module knows feature specs and encoders, not model artifacts (which sit above
``features/``): :meth:`FeaturizerSet.from_artifact` accepts anything shaped like one
(:class:`TrainedFeatures`, e.g. :class:`~cberl_model.artifact.ModelArtifact`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from cberl_model.features.media import Featurizer, UtteranceMedia
from cberl_model.features.registry import build_featurizer, check_featurizer, registration
from cberl_model.features.spec import PRECOMPUTED, FeatureSpec, spec_to_json
from cberl_model.features.text_encoder import TextEncoder
from cberl_model.features.text_featurizer import TextFeaturizer

__all__ = ["FeaturizerSet", "TextFeaturizer", "TrainedFeatures", "feature_spec_id"]

log = logging.getLogger(__name__)


class TrainedFeatures(Protocol):
    """What a trained model says about its features (a loaded ``ModelArtifact`` is one)."""

    @property
    def feature_spec(self) -> FeatureSpec: ...

    @property
    def encoder(self) -> TextEncoder | None: ...

    @property
    def model_id(self) -> str: ...


class FeaturizerSet:
    """One featurizer per modality of a model's feature spec."""

    def __init__(self, featurizers: Sequence[Featurizer], spec_id: str) -> None:
        self.featurizers = {f.modality: f for f in featurizers}
        self.feature_spec_id = spec_id

    def __repr__(self) -> str:
        names = ", ".join(f"{m}={f.name}" for m, f in self.featurizers.items())
        return f"{self.__class__.__name__}({names}; {self.feature_spec_id})"

    @classmethod
    def from_spec(cls, feature_spec: FeatureSpec, encoder: TextEncoder | None = None,
                  device: str = "auto", compute_type: str = "default",
                  model_id: str = "the model") -> FeaturizerSet:
        """The featurizers that reproduce the training features ``feature_spec`` records.

        ``encoder`` is the model's text encoder (needed by a ``text-encoder`` modality).
        ``device`` / ``compute_type`` go to the shared Whisper model; pass what the ASR
        uses so one model serves both. A ``precomputed`` modality (vectors that came with
        the training corpus) has no featurizer: it stays absent, and a warning naming
        ``model_id`` says so.

        Raises:
            FeaturizerError: If a named featurizer is not installed, or the installed one
                has another version or dimension than the spec (the message says which
                modality and what differs).
        """
        featurizers: list[Featurizer] = []
        for modality, spec in feature_spec.items():
            if spec.extractor == PRECOMPUTED:
                log.warning("model %s: %s features were pre-computed for training; no featurizer "
                            "can produce them, so that modality stays absent", model_id, modality)
                continue
            registration(spec.extractor, modality)
            featurizer, _ = build_featurizer(spec.extractor, spec.options, encoder, device,
                                             compute_type)
            check_featurizer(modality, spec, featurizer)
            featurizers.append(featurizer)
        return cls(featurizers, feature_spec_id(feature_spec))

    @classmethod
    def from_artifact(cls, artifact: TrainedFeatures, device: str = "auto",
                      compute_type: str = "default") -> FeaturizerSet:
        """:meth:`from_spec` with a loaded model's feature spec, encoder and id."""
        return cls.from_spec(artifact.feature_spec, artifact.encoder, device, compute_type,
                             artifact.model_id)

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities this set produces, in spec order."""
        return tuple(self.featurizers)

    def featurize(self, batch: Sequence[UtteranceMedia]) -> list[dict[str, np.ndarray | None]]:
        """Per-utterance ``{modality: vector or None}`` for every modality of the set."""
        columns = {m: f.featurize(batch) for m, f in self.featurizers.items()}
        return [{m: columns[m][i] for m in columns} for i in range(len(batch))]


def feature_spec_id(feature_spec: FeatureSpec) -> str:
    """A short id of a model's feature spec; Utterance events carry it."""
    blob = json.dumps(spec_to_json(feature_spec), sort_keys=True).encode()
    return "fs-" + hashlib.sha256(blob).hexdigest()[:12]
