"""The text featurizer: the model's own (possibly LoRA-adapted) sentence encoder."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cberl_model.features.media import UtteranceMedia
from cberl_model.features.spec import TEXT_ENCODER
from cberl_model.features.text_encoder import TextEncoder


class TextFeaturizer:
    """Sentence embeddings of the transcript.

    The version is the encoder's feature id (weights fingerprint, pooling, truncation and
    adapter hash), the same id the trainer's feature cache and the artifact use. An
    utterance without text gets ``None``.

    Args:
        encoder: The encoder a model artifact carries (see ``ModelArtifact.encoder``).
    """

    modality = "text"
    name = TEXT_ENCODER

    def __init__(self, encoder: TextEncoder) -> None:
        self.encoder = encoder
        self.version = encoder.feature_id()
        self.dim = encoder.dim

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.encoder!r})"

    def featurize(self, batch: Sequence[UtteranceMedia]) -> list[np.ndarray | None]:
        """One ``(dim,)`` vector per utterance with text, ``None`` for the others."""
        texts = [(i, m.text.strip()) for i, m in enumerate(batch) if m.text and m.text.strip()]
        out: list[np.ndarray | None] = [None] * len(batch)
        if texts:
            with torch.inference_mode():
                vectors = self.encoder.encode([t for _, t in texts])
            for (i, _), vec in zip(texts, vectors, strict=True):
                out[i] = vec
        return out
