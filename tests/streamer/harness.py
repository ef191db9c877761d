"""Run audio through a participant pipeline faster than real time (no network).

:class:`ArrayTrack` is a real aiortc ``MediaStreamTrack``: it hands out 20 ms 48 kHz
frames with RTP-style timestamps, as a remote Opus track does, then ends.
"""

from __future__ import annotations

import fractions

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from streamer.metrics import StreamerMetrics
from streamer.pipeline import ParticipantPipeline, Speaker
from streamer.recognizer import SegmentRecognizer
from streamer.sequencer import CallSequencer
from streamer.vad import VadParams
from workers.events import CallEnded, UtteranceEvent

_RATE = 48_000
_FRAME = 960


class ArrayTrack(MediaStreamTrack):
    """16 kHz float audio served as 48 kHz s16 frames, as fast as they are asked for."""

    kind = "audio"

    def __init__(self, audio_16k: np.ndarray) -> None:
        super().__init__()
        self._pcm = (np.clip(np.repeat(audio_16k, 3), -1, 1) * 32767).astype(np.int16)
        self._pos = 0

    async def recv(self) -> av.AudioFrame:
        if self._pos >= self._pcm.size:
            self.stop()
            raise MediaStreamError
        chunk = self._pcm[self._pos:self._pos + _FRAME]
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = _RATE, self._pos, fractions.Fraction(1, _RATE)
        self._pos += _FRAME
        return frame


async def run_pipeline(audio_16k: np.ndarray, recognizer: SegmentRecognizer,
                       vad: VadParams | None = None) -> list[UtteranceEvent | CallEnded]:
    """Every event one participant's audio produces (the call's end included)."""
    published: list[UtteranceEvent | CallEnded] = []
    sequencer = CallSequencer("c-test", lambda e: published.append(e) or True)
    pipeline = ParticipantPipeline(Speaker("c-test", "p-1", "pat"), sequencer, recognizer,
                                   StreamerMetrics(), lambda _ms: 0, vad or VadParams(), video_fps=0)
    pipeline.add_track(ArrayTrack(audio_16k))
    await pipeline.close(timeout_s=120)
    await sequencer.drain()
    sequencer.end()
    return published
