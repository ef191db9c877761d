"""ASR stage: faster-whisper's CTranslate2 Whisper on endpointed segments; the only module
that touches it.

Why not ``WhisperModel.transcribe``: it pads every segment to Whisper's 30 s window, so a
2 s utterance costs the encoder as much as 30 s of audio. CTranslate2's Whisper accepts
mel inputs shorter than 3,000 frames, so this module computes the log-mel itself, pads it
to a chosen **window** (``window_s``, 10 s by default: the shortest with the 30 s WER on
dev speech, ``benchmarks/asr_window.py``) and calls the encoder and the greedy decoder
directly. A segment longer than the window gets the next window that holds it
(``_WINDOWS_S``), never a truncation. Windows much shorter than ~5 s break Whisper (it
was trained on 30 s windows and needs trailing padding).

**Batching**: :meth:`Transcriber.transcribe_batch` runs the segments of many
participants in one encoder call and one decoder call (CTranslate2 batches), grouped by
window. The caller (:mod:`streamer.analyzer`) hands it whatever is queued.

Blocking: the analyzer calls it on its one ASR thread, never on the event loop.
Decoding: greedy (``beam_size`` 1) at temperature 0, no previous-text conditioning, no
timestamps, the same suppressed tokens as faster-whisper -- what the streamer asked
``transcribe`` for before.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from cberl_model.features.media import SAMPLE_RATE
from cberl_model.features.whisper_model import shared_whisper_model
from streamer.frames import Transcript

FRAMES_PER_S = 100
"""Whisper log-mel frames per second (hop 160 at 16 kHz)."""
_WINDOWS_S = (5.0, 8.0, 10.0, 15.0, 20.0, 30.0)
"""Windows a segment longer than the configured one falls back to (the next that holds it)."""
_TAIL_S = 0.5
"""Padding a segment keeps after its audio inside the window (Whisper needs some)."""
_MAX_NEW_TOKENS = 128


def window_for(duration_s: float, window_s: float) -> float:
    """The encoder window for a segment: ``window_s``, or the next window that holds it."""
    if duration_s + _TAIL_S <= window_s:
        return window_s
    for w in _WINDOWS_S:
        if w >= window_s and duration_s + _TAIL_S <= w:
            return w
    return _WINDOWS_S[-1]


class Transcriber:
    """One Whisper model (the process-wide shared instance) behind our own result type.

    Args:
        model_spec: ``package:NAME``, a CTranslate2 model directory or a size name.
        device: ``auto`` (CUDA float16 when present, else CPU int8), ``cpu`` or ``cuda``.
        beam_size: 1 (greedy) keeps latency low; larger trades latency for accuracy.
        window_s: Encoder window in seconds (30: what ``WhisperModel.transcribe`` does).
    """

    def __init__(self, model_spec: str, device: str = "auto", beam_size: int = 1,
                 window_s: float = 10.0) -> None:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self._model = shared_whisper_model(model_spec, device)
        self.beam_size = beam_size
        self.window_s = window_s
        self.device = str(self._model.model.device)
        multilingual = bool(self._model.model.is_multilingual)
        self._tokenizer = Tokenizer(self._model.hf_tokenizer, multilingual, task="transcribe",
                                    language="en" if multilingual else None)
        self._prompt = self._model.get_prompt(self._tokenizer, [], without_timestamps=True)
        self._suppress = get_suppressed_tokens(self._tokenizer, [-1])
        self._eot = self._tokenizer.eot

    def transcribe(self, audio: np.ndarray, window_s: float | None = None) -> Transcript:
        """Transcribe one segment (16 kHz mono float32). Blocking; call it off the loop."""
        return self.transcribe_batch([audio], window_s)[0]

    def transcribe_batch(self, audios: Sequence[np.ndarray], window_s: float | None = None
                         ) -> list[Transcript]:
        """Transcribe segments together: one encoder and one decoder call per window size.

        ``compute_s`` of each result is the wall time of its group divided by the group's
        size (the per-segment share of the batched call).
        """
        window = self.window_s if window_s is None else window_s
        results: list[Transcript | None] = [None] * len(audios)
        groups: dict[float, list[int]] = {}
        for i, audio in enumerate(audios):
            groups.setdefault(window_for(audio.size / SAMPLE_RATE, window), []).append(i)
        for w, indices in groups.items():
            started = time.perf_counter()
            outputs = self._run([audios[i] for i in indices], w)
            share_s = (time.perf_counter() - started) / len(indices)
            for i, (text, logprob, no_speech) in zip(indices, outputs, strict=True):
                results[i] = Transcript(text=text, confidence=min(max(math.exp(logprob), 0.0), 1.0),
                                        no_speech_prob=no_speech,
                                        duration_s=audios[i].size / SAMPLE_RATE, compute_s=share_s)
        return [r for r in results if r is not None]

    def _features(self, audio: np.ndarray, frames: int) -> np.ndarray:
        mel = self._model.feature_extractor(audio.astype(np.float32, copy=False))[:, :-1]
        if mel.shape[1] >= frames:
            return mel[:, :frames]
        return np.pad(mel, ((0, 0), (0, frames - mel.shape[1])))

    def _run(self, audios: list[np.ndarray], window_s: float) -> list[tuple[str, float, float]]:
        import ctranslate2

        frames = int(round(window_s * FRAMES_PER_S))
        batch = np.ascontiguousarray(np.stack([self._features(a, frames) for a in audios]))
        features = ctranslate2.StorageView.from_array(batch)
        encoded = self._model.model.encode(features, to_cpu=False)
        generated = self._model.model.generate(
            encoded, [self._prompt] * len(audios), beam_size=self.beam_size,
            max_length=len(self._prompt) + _MAX_NEW_TOKENS, return_scores=True,
            return_no_speech_prob=True, suppress_blank=True, suppress_tokens=self._suppress)
        out = []
        for result in generated:
            tokens = [t for t in result.sequences_ids[0] if t < self._eot]
            text = self._tokenizer.decode(tokens).strip()
            # the score is the length-normalised cumulative log-probability (penalty 1)
            logprob = result.scores[0] * len(result.sequences_ids[0]) / (len(result.sequences_ids[0]) + 1) \
                if result.sequences_ids[0] else -math.inf
            out.append((text, float(logprob), float(result.no_speech_prob)))
        return out
