"""Run audio through a participant pipeline faster than real time (no network).

:class:`ArrayTrack` is a real aiortc ``MediaStreamTrack``: it hands out 20 ms 48 kHz
frames with RTP-style timestamps, as a remote Opus track does, then ends.
"""

from __future__ import annotations

import asyncio
import fractions

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from contracts.events import CallEnded, UtteranceEvent
from streamer.analyzer import SegmentAnalyzer
from streamer.metrics import StreamerMetrics
from streamer.pipeline import ParticipantPipeline, Speaker
from streamer.sequencer import CallSequencer
from streamer.vad import VadParams

_RATE = 48_000
_FRAME = 960


class ArrayTrack(MediaStreamTrack):
    """16 kHz float audio served as 48 kHz s16 frames, as fast as asked for or in real time."""

    kind = "audio"

    def __init__(self, audio_16k: np.ndarray, realtime: bool = False) -> None:
        super().__init__()
        self._pcm = (np.clip(np.repeat(audio_16k, 3), -1, 1) * 32767).astype(np.int16)
        self._pos = 0
        self._realtime = realtime

    async def recv(self) -> av.AudioFrame:
        if self._realtime:
            await asyncio.sleep(_FRAME / _RATE)  # pacing, not waiting: 20 ms of audio per frame
        if self._pos >= self._pcm.size:
            self.stop()
            raise MediaStreamError
        chunk = self._pcm[self._pos:self._pos + _FRAME]
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = _RATE, self._pos, fractions.Fraction(1, _RATE)
        self._pos += _FRAME
        return frame


async def run_pipeline(audio_16k: np.ndarray, analyzer: SegmentAnalyzer, vad: VadParams | None = None,
                       video: MediaStreamTrack | None = None, video_fps: float = 0,
                       ) -> list[UtteranceEvent | CallEnded]:
    """Every event one participant's audio produces (the call's end included).

    With ``video``, the audio is paced in real time (video sampling follows the wall clock).
    """
    published: list[UtteranceEvent | CallEnded] = []
    sequencer = CallSequencer("c-test", lambda e: published.append(e) or True)
    pipeline = ParticipantPipeline(Speaker("c-test", "p-1", "pat"), sequencer, analyzer,
                                   StreamerMetrics(), lambda _ms: 0, vad or VadParams(), video_fps)
    pipeline.add_track(ArrayTrack(audio_16k, realtime=video is not None))
    if video is not None:
        pipeline.add_track(video)
    await pipeline.close(timeout_s=120)
    await sequencer.drain()
    sequencer.end()
    return published
