"""Audio features: Whisper encoder states, mean-pooled over the utterance.

Uses the process's one faster-whisper model (:func:`shared_whisper_model`), the same
instance the streamer transcribes with, so serving holds a single copy in memory.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cberl_model.features.media import SAMPLE_RATE, UtteranceMedia
from cberl_model.features.spec import weights_fingerprint
from cberl_model.features.whisper_model import (
    DEFAULT_WHISPER_MODEL,
    resolve_whisper_model,
    shared_whisper_model,
)

WHISPER_ENCODER = "whisper-encoder"
MIN_AUDIO_S = 0.1
"""Shorter audio counts as absent (it spans fewer than five encoder frames)."""
_WINDOW_FRAMES = 3000
"""Mel frames per encoder window (30 s); the encoder halves them (20 ms per state)."""


def whisper_version(model: str) -> str:
    """Pooling version plus a fingerprint of the model directory (names, sizes, config)."""
    return f"mean1-{weights_fingerprint(Path(resolve_whisper_model(model)))}"


@functools.cache
def _encoder_dim(model: str, device: str, compute_type: str) -> int:
    """Width of the encoder states, read off one silent window (CTranslate2 does not say)."""
    whisper = shared_whisper_model(model, device, compute_type)
    silent = np.zeros((1, whisper.model.n_mels, _WINDOW_FRAMES), dtype=np.float32)
    return int(np.asarray(whisper.encode(silent)).shape[-1])


class WhisperEncoderFeaturizer:
    """Mean of the Whisper encoder states that cover the utterance's speech.

    Audio longer than 30 s is split into 30-s windows; padding states are left out of the
    mean. Absent audio, or audio shorter than :data:`MIN_AUDIO_S`, yields ``None``.

    Args:
        model: Whisper model spec (``package:NAME``, a CTranslate2 directory or a size).
        device / compute_type: As for :func:`shared_whisper_model`; the streamer passes the
            values its ASR uses so both share one model. int8 (CPU) and float16 (CUDA) give
            slightly different vectors, within the model's own numerical noise.
    """

    modality = "audio"
    name = WHISPER_ENCODER

    def __init__(self, model: str = DEFAULT_WHISPER_MODEL, device: str = "auto",
                 compute_type: str = "default") -> None:
        self.model_spec = model
        self.whisper = shared_whisper_model(model, device, compute_type)
        self.version = whisper_version(model)
        self.dim = _encoder_dim(model, device, compute_type)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.model_spec!r}, dim={self.dim})"

    @property
    def options(self) -> dict[str, str]:
        """What a model artifact records to rebuild this featurizer."""
        return {"model": self.model_spec}

    def featurize(self, batch: Sequence[UtteranceMedia]) -> list[np.ndarray | None]:
        """One ``(dim,)`` vector per utterance with usable audio, else ``None``."""
        windows: list[np.ndarray] = []
        spans: list[tuple[int, list[int]]] = []  # (utterance, valid states per window)
        for i, media in enumerate(batch):
            if media.audio is None or len(media.audio) < MIN_AUDIO_S * SAMPLE_RATE:
                continue
            # Like faster-whisper's transcribe: the last mel frame is a padding artefact.
            mel = self.whisper.feature_extractor(np.asarray(media.audio, dtype=np.float32))[..., :-1]
            valid = []
            for start in range(0, mel.shape[-1], _WINDOW_FRAMES):
                chunk = mel[:, start:start + _WINDOW_FRAMES]
                valid.append(max(1, math.ceil(chunk.shape[-1] / 2)))
                windows.append(np.pad(chunk, ((0, 0), (0, _WINDOW_FRAMES - chunk.shape[-1]))))
            spans.append((i, valid))
        out: list[np.ndarray | None] = [None] * len(batch)
        if not windows:
            return out
        states = np.asarray(self.whisper.encode(np.stack(windows).astype(np.float32)))
        row = 0
        for i, valid in spans:
            pieces = [states[row + k, :n] for k, n in enumerate(valid)]
            row += len(valid)
            out[i] = np.concatenate(pieces).mean(0).astype(np.float32)
        return out
