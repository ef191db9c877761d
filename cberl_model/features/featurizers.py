"""The featurizers a model was trained with, built from its artifact, for serving.

The streamer calls :meth:`FeaturizerSet.featurize` on each endpointed utterance and puts
the vectors into the Utterance event; the worker hands them to the model unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
import torch

from cberl_model.artifact import ModelArtifact
from cberl_model.features.corpus_features import TEXT_ENCODER, spec_to_json
from cberl_model.features.media import Featurizer, UtteranceMedia
from cberl_model.features.text_encoder import TextEncoder


class TextFeaturizer:
    """Sentence embeddings of the transcript (the model's, possibly adapted, text encoder)."""

    modality = "text"

    def __init__(self, encoder: TextEncoder) -> None:
        self.encoder = encoder
        self.name = TEXT_ENCODER
        self.version = encoder.feature_id()
        self.dim = encoder.dim

    def featurize(self, batch: Sequence[UtteranceMedia]) -> list[np.ndarray | None]:
        texts = [(i, m.text.strip()) for i, m in enumerate(batch) if m.text and m.text.strip()]
        out: list[np.ndarray | None] = [None] * len(batch)
        if texts:
            with torch.inference_mode():
                vectors = self.encoder.encode([t for _, t in texts])
            for (i, _), vec in zip(texts, vectors, strict=True):
                out[i] = vec
        return out


class FeaturizerSet:
    """One featurizer per modality of a model's feature spec."""

    def __init__(self, featurizers: Sequence[Featurizer], spec_id: str) -> None:
        self.featurizers = {f.modality: f for f in featurizers}
        self.feature_spec_id = spec_id

    @classmethod
    def from_artifact(cls, artifact: ModelArtifact) -> FeaturizerSet:
        """The featurizers that reproduce ``artifact``'s training features."""
        featurizers: list[Featurizer] = []
        if "text" in artifact.feature_spec and artifact.encoder is not None:
            featurizers.append(TextFeaturizer(artifact.encoder))
        return cls(featurizers, feature_spec_id(artifact))

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.featurizers)

    def featurize(self, batch: Sequence[UtteranceMedia]) -> list[dict[str, np.ndarray | None]]:
        """Per-utterance ``{modality: vector or None}`` for every modality of the set."""
        columns = {m: f.featurize(batch) for m, f in self.featurizers.items()}
        return [{m: columns[m][i] for m in columns} for i in range(len(batch))]


def feature_spec_id(artifact: ModelArtifact) -> str:
    """A short id of the artifact's feature spec; Utterance events carry it."""
    blob = json.dumps(spec_to_json(artifact.feature_spec), sort_keys=True).encode()
    return "fs-" + hashlib.sha256(blob).hexdigest()[:12]
