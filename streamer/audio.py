"""Decode stage: aiortc audio frames -> 16 kHz mono float32 on a gap-aware media timeline.

The timeline counts 16 kHz samples from the participant's first audio frame, driven by the
frames' RTP timestamps (``pts``), not by wall-clock arrival: packets lost on the way become
inserted silence (counted as dropped), so ``start_ms``/``end_ms`` of an utterance stay on
the sender's clock however late the frames arrive.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from cberl_model.features.media import SAMPLE_RATE
from streamer.frames import AudioChunk

_RTP_WRAP = 1 << 32
_MAX_GAP_S = 5.0
"""Larger pts jumps are treated as a sender restart (timeline continues, no silence added)."""


class AudioDecoder:
    """Pure core: one participant's frames in, :class:`AudioChunk` values out."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self._next_pts: int | None = None
        self._position = 0
        self.dropped_samples = 0

    def decode(self, frame: av.AudioFrame) -> AudioChunk | None:
        """Resample ``frame`` and place it on the timeline (``None`` if it yields nothing yet)."""
        gap = self._gap_samples(frame)
        parts = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        samples = np.concatenate(parts).astype(np.float32, copy=False) if parts else \
            np.zeros(0, np.float32)
        if gap:
            samples = np.concatenate([np.zeros(gap, np.float32), samples])
            self.dropped_samples += gap
        if samples.size == 0:
            return None
        chunk = AudioChunk(samples=samples, start_sample=self._position, gap_samples=gap)
        self._position += samples.size
        return chunk

    def _gap_samples(self, frame: av.AudioFrame) -> int:
        """16 kHz samples missing between the previous frame and this one, by RTP timestamp."""
        if frame.pts is None or frame.time_base is None or frame.sample_rate == 0:
            return 0
        expected, self._next_pts = self._next_pts, (frame.pts + frame.samples) % _RTP_WRAP
        if expected is None:
            return 0
        missing = (frame.pts - expected) % _RTP_WRAP
        seconds = Fraction(missing) * frame.time_base
        if missing == 0 or seconds > _MAX_GAP_S:
            return 0
        return int(seconds * SAMPLE_RATE)
