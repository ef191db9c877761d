"""ASR stage: faster-whisper on one endpointed segment; the only module that touches it.

Blocking: the pipeline calls :meth:`Transcriber.transcribe` on the shared ASR thread pool,
never on the event loop. The segments iterator of faster-whisper is lazy, so it is drained
(``list``) here, inside the worker thread. ``vad_filter`` stays off: the endpointer already
cut the audio, and a second VAD pass would only add latency.
"""

from __future__ import annotations

import math
import time

import numpy as np

from cberl_model.features.media import SAMPLE_RATE
from cberl_model.features.whisper_model import shared_whisper_model
from streamer.frames import Transcript


class Transcriber:
    """One faster-whisper model (the process-wide shared instance) behind our own result type.

    Args:
        model_spec: ``package:NAME``, a CTranslate2 model directory or a size name.
        device: ``auto`` (CUDA float16 when present, else CPU int8), ``cpu`` or ``cuda``.
        beam_size: 1 (greedy) keeps latency low; larger trades latency for accuracy.
    """

    def __init__(self, model_spec: str, device: str = "auto", beam_size: int = 1) -> None:
        self._model = shared_whisper_model(model_spec, device)
        self._beam_size = beam_size
        self._english_only = bool(getattr(self._model.model, "is_multilingual", True) is False)

    def transcribe(self, audio: np.ndarray) -> Transcript:
        """Transcribe one segment (16 kHz mono float32). Blocking; call it off the loop."""
        started = time.perf_counter()
        segments, _info = self._model.transcribe(
            audio, language="en" if self._english_only else None, beam_size=self._beam_size,
            vad_filter=False, without_timestamps=True, condition_on_previous_text=False,
            temperature=0.0)
        parts = list(segments)
        text = " ".join(s.text.strip() for s in parts).strip()
        if parts:
            tokens = [max(len(s.tokens), 1) for s in parts]
            mean_logprob = sum(s.avg_logprob * n for s, n in zip(parts, tokens, strict=True)) / sum(tokens)
            no_speech = max(s.no_speech_prob for s in parts)
        else:
            mean_logprob, no_speech = -math.inf, 1.0
        return Transcript(text=text, confidence=min(max(math.exp(mean_logprob), 0.0), 1.0),
                          no_speech_prob=float(no_speech), duration_s=audio.size / SAMPLE_RATE,
                          compute_s=time.perf_counter() - started)
