"""What a featurizer sees of one utterance: its text, audio and video, any of them absent.

The trainer (corpus builder, from files) and the streamer (from a live call) both build an
:class:`UtteranceMedia` and hand it to the same featurizers, so a model runs on a call with
exactly the features it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

SAMPLE_RATE = 16_000
"""Audio handed to featurizers is mono float32 in [-1, 1] at this rate."""

FRAME_RATE = 5.0
"""Video frames per second that the corpus builder samples, and that callers should sample.

Face featurizers pool over frames (mean / std), so another rate changes the vectors only
through sampling noise, but the same rate in training and serving keeps them identical.
"""

MAX_FRAMES = 64
"""At most this many frames per utterance: longer clips are sampled at a lower rate
(``MAX_FRAMES / duration``) so memory and face-detection time stay bounded."""


class FeaturizerError(ValueError):
    """A featurizer cannot be built, or differs from the one a model was trained with."""


@dataclass(frozen=True)
class UtteranceMedia:
    """One utterance's raw inputs.

    Attributes:
        text: The transcript (``None`` or empty when there is none).
        audio: Mono float32 samples at :data:`SAMPLE_RATE`, or ``None``.
        frames: RGB uint8 video frames (H x W x 3) sampled over the utterance, or empty.
        frame_rate: Frames per second of ``frames`` (how they were sampled).
    """

    text: str | None = None
    audio: np.ndarray | None = None
    frames: Sequence[np.ndarray] = field(default_factory=tuple)
    frame_rate: float = 0.0

    @property
    def duration_s(self) -> float:
        """Length of the audio in seconds (0 without audio)."""
        return 0.0 if self.audio is None else len(self.audio) / SAMPLE_RATE


class Featurizer(Protocol):
    """Turns utterances into one modality's vectors.

    ``name``, ``version`` and ``dim`` go into the model artifact's feature spec; a model is
    refused at load time when the installed featurizer differs in any of them.
    """

    name: str
    version: str
    modality: str
    dim: int

    def featurize(self, batch: Sequence[UtteranceMedia]) -> list[np.ndarray | None]:
        """One ``(dim,)`` float32 vector per utterance, ``None`` where the modality is absent."""
        ...
