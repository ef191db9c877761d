"""Endpointing stage: streaming silero VAD cuts a participant's audio into speech segments.

Pure core (:class:`Endpointer`, no I/O): 16 kHz samples go in as they arrive, closed
:class:`~streamer.frames.SpeechSegment` values come out. The VAD is the silero v6 ONNX model
bundled with faster-whisper, run incrementally on 512-sample (32 ms) blocks with its LSTM
state and 64-sample context carried over, which gives the same probabilities as
faster-whisper's offline pass over the whole file.

Rules (silero's, made streaming):
- speech starts at the first block with probability >= ``threshold``;
- it ends once ``min_silence_ms`` of blocks stay below ``threshold - 0.15``; the segment's
  end is the start of that silence (so a segment is closed ``min_silence_ms`` after the
  end of speech: that is the endpointing latency). The audio handed on is padded by
  ``speech_pad_ms`` on both sides (Whisper clips words cut too tightly), the reported
  start/end are not;
- segments shorter than ``min_speech_ms`` are dropped (clicks, breaths);
- at ``max_utterance_s`` the segment is split at its quietest block in the last half, and
  the rest carries on as the next segment;
- :meth:`Endpointer.finish` flushes a segment still open (hang-up mid-sentence).

**Turns** (``turn_silence_ms`` set, ``CBERL_UTTERANCE_UNIT=turn``): a segment ends after
``turn_silence_ms`` of silence instead, or after ``min_silence_ms`` once another
participant of the call has started talking (:meth:`Endpointer.yield_floor`, called by
the pipeline): one speaker's pauses inside a turn no longer split it.

**Speculation** (``speculate_ms`` set): once a silence run inside speech has lasted
``max(speculate_ms, speech_pad_ms)``, :meth:`Endpointer.take_tentative` hands out the
segment as it would close if the silence holds (same bounds, audio and end-of-speech
time), so ASR can run during the rest of the silence wait. If speech resumes, the
segment that eventually closes has other bounds and the tentative one is discarded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from faster_whisper.vad import get_vad_model

from cberl_model.features.media import SAMPLE_RATE
from streamer.frames import SpeechSegment

BLOCK = 512
"""Samples per VAD block at 16 kHz (32 ms): what the silero model takes."""
_CONTEXT = 64


@dataclass(frozen=True)
class VadParams:
    """Endpointing parameters (``StreamerSettings.vad_*`` and ``max_utterance_s``)."""

    threshold: float = 0.5
    min_silence_ms: int = 250
    min_speech_ms: int = 150
    speech_pad_ms: int = 100
    max_utterance_s: float = 15.0
    turn_silence_ms: int | None = None
    """Turn mode: the silence that ends a turn while nobody else talks (``None``: segments)."""
    speculate_ms: int | None = None
    """Offer a tentative segment after this much silence (``None``: never)."""


class SileroStream:
    """Silero VAD over consecutive blocks of one stream (keeps the model's recurrent state).

    The ONNX session is shared by every stream of the process (sessions are thread-safe
    and stateless: the state lives here); a block costs ~0.15 ms on one CPU core.
    """

    def __init__(self) -> None:
        self._session = get_vad_model().session
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros((1, _CONTEXT), np.float32)

    def probability(self, block: np.ndarray) -> float:
        """Speech probability of the next ``BLOCK`` samples."""
        x = block.reshape(1, BLOCK)
        out, self._h, self._c = self._session.run(
            None, {"input": np.concatenate([self._context, x], axis=1), "h": self._h, "c": self._c})
        self._context = x[:, -_CONTEXT:]
        return float(np.asarray(out).reshape(-1)[0])


class Endpointer:
    """Streaming VAD endpointer for one participant.

    Args:
        params: Endpointing rules.
        vad: The per-stream VAD (a fresh :class:`SileroStream` when omitted).
    """

    def __init__(self, params: VadParams, vad: SileroStream | None = None) -> None:
        self.params = params
        self._vad = vad or SileroStream()
        self._pending = np.zeros(0, np.float32)
        self._blocks: list[np.ndarray] = []       # audio kept: pre-roll, or the open segment
        self._blocks_start = 0                    # timeline sample of self._blocks[0]
        self._probs: list[float] = []             # per block of the open segment
        self._position = 0                        # timeline samples consumed into blocks
        self._speech_start: int | None = None     # timeline sample where the open segment's speech starts
        self._silence_start: int | None = None    # start of the current silence run in speech
        self._last_arrival_ms = 0
        self._pad = params.speech_pad_ms * SAMPLE_RATE // 1000
        self._min_silence = params.min_silence_ms * SAMPLE_RATE // 1000
        self._turn_silence = (params.turn_silence_ms * SAMPLE_RATE // 1000
                              if params.turn_silence_ms is not None else None)
        self._floor_taken = False                 # turn mode: another participant started talking
        self._speculate = (max(params.speculate_ms, params.speech_pad_ms) * SAMPLE_RATE // 1000
                           if params.speculate_ms is not None else None)
        self._speculated_for: int | None = None   # silence start a tentative segment was made for
        self._tentative: SpeechSegment | None = None
        self.speech_starts = 0
        """Segments opened so far (the pipeline tells the call's other participants)."""
        self._min_speech = params.min_speech_ms * SAMPLE_RATE // 1000
        self._max_len = int(params.max_utterance_s * SAMPLE_RATE)
        self._neg_threshold = max(params.threshold - 0.15, 0.01)

    @property
    def in_speech(self) -> bool:
        """Whether a segment is open (the participant is talking): video sampling follows it."""
        return self._speech_start is not None

    def feed(self, samples: np.ndarray, arrival_ms: int) -> list[SpeechSegment]:
        """Take the next samples (arrived at wall-clock ``arrival_ms``); return closed segments."""
        self._last_arrival_ms = arrival_ms
        self._pending = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        closed: list[SpeechSegment] = []
        n_blocks = self._pending.size // BLOCK
        for i in range(n_blocks):
            segment = self._step(self._pending[i * BLOCK:(i + 1) * BLOCK])
            if segment is not None:
                closed.append(segment)
        self._pending = self._pending[n_blocks * BLOCK:]
        return closed

    def finish(self, arrival_ms: int) -> SpeechSegment | None:
        """Close the stream: flush the open segment (the speaker hung up mid-sentence)."""
        self._last_arrival_ms = arrival_ms
        if self._pending.size:
            self._blocks.append(self._pending)
            self._position += self._pending.size
            self._pending = np.zeros(0, np.float32)
        if self._speech_start is None:
            return None
        end = self._silence_start if self._silence_start is not None else self._position
        return self._close(end, "hangup")

    def _step(self, block: np.ndarray) -> SpeechSegment | None:
        """One VAD block through the state machine."""
        prob = self._vad.probability(block)
        block_start = self._position
        self._blocks.append(block)
        self._position += BLOCK
        if self._speech_start is None:
            if prob >= self.params.threshold:
                self._speech_start = block_start
                self._probs = [prob]
                self._silence_start = None
                self._floor_taken = False
                self.speech_starts += 1
            else:
                self._trim_preroll()
            return None
        self._probs.append(prob)
        if prob >= self.params.threshold:
            self._silence_start = None
        elif prob < self._neg_threshold and self._silence_start is None:
            self._silence_start = block_start
        if self._silence_start is not None and self._position - self._silence_start >= self._silence_needed():
            return self._close(self._silence_start, "silence")
        if (self._speculate is not None and self._silence_start is not None
                and self._speculated_for != self._silence_start
                and self._position - self._silence_start >= self._speculate
                and self._silence_start - self._speech_start >= self._min_speech):
            self._speculated_for = self._silence_start
            self._tentative = self._segment(self._speech_start, self._silence_start, "silence")
        if self._position - self._speech_start >= self._max_len:
            return self._close(self._split_point(), "max_length")
        return None

    def take_tentative(self) -> SpeechSegment | None:
        """The segment as it would close if the current silence holds (once per silence run)."""
        tentative, self._tentative = self._tentative, None
        return tentative

    def _silence_needed(self) -> int:
        if self._turn_silence is None or self._floor_taken:
            return self._min_silence
        return self._turn_silence

    def yield_floor(self, arrival_ms: int) -> SpeechSegment | None:
        """Turn mode: another participant started talking. Close the open turn now if its
        speaker has been silent for ``min_silence_ms``, else at the next such pause."""
        if self._turn_silence is None or self._speech_start is None:
            return None
        self._floor_taken = True
        if self._silence_start is not None and self._position - self._silence_start >= self._min_silence:
            return self._close(self._silence_start, "turn")
        return None

    def _split_point(self) -> int:
        """The start of the quietest block in the open segment's last half (a clean split)."""
        n = len(self._probs)
        half = n // 2
        quietest = half + int(np.argmin(self._probs[half:]))
        return self._position - (n - quietest) * BLOCK

    def _close(self, end: int, reason: str) -> SpeechSegment | None:
        """Emit speech ``[speech_start, end)`` and reset; on a split, speech goes on from ``end``."""
        assert self._speech_start is not None
        start = self._speech_start
        segment = self._segment(start, end, reason)
        self._tentative = None
        if reason == "max_length":
            self._speech_start = end
            kept = len(self._probs) - (end - (self._position - len(self._probs) * BLOCK)) // BLOCK
            self._probs = self._probs[-kept:] if kept > 0 else []
            self._silence_start = None
        else:
            self._speech_start = None
            self._silence_start = None
            self._probs = []
        self._trim_preroll()
        if reason != "max_length" and end - start < self._min_speech:
            return None
        return segment

    def _segment(self, start: int, end: int, reason: str) -> SpeechSegment:
        """Speech ``[start, end)`` of the kept blocks, padded, as a segment."""
        audio_start = max(start - self._pad, self._blocks_start)
        audio_end = min(end + self._pad, self._position) if reason != "max_length" else end
        audio = np.concatenate(self._blocks)[audio_start - self._blocks_start:audio_end - self._blocks_start]
        lag_ms = (self._position - end) * 1000 // SAMPLE_RATE
        return SpeechSegment(
            audio=audio, start_sample=start, end_sample=end, reason=reason,
            end_of_speech_at_ms=self._last_arrival_ms - lag_ms, endpointed_at_ms=self._last_arrival_ms)

    def _trim_preroll(self) -> None:
        """Drop audio no segment can need any more (keep the pad before a possible start)."""
        keep_from = self._position - self._pad - BLOCK if self._speech_start is None \
            else self._speech_start - self._pad
        drop = 0
        while drop < len(self._blocks) and self._blocks_start + self._blocks[drop].size <= keep_from:
            self._blocks_start += self._blocks[drop].size
            drop += 1
        if drop:
            del self._blocks[:drop]
