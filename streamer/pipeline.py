"""One participant's media pipeline: track -> decode -> endpoint -> recognise -> sequencer.

The async adapter around the pure stages (:class:`~streamer.audio.AudioDecoder`,
:class:`~streamer.vad.Endpointer`). It owns its tasks (audio, video, one per segment in
recognition), names them and cancels them. The audio loop runs until the track ends
(``MediaStreamError``: the participant left, hung up or the connection failed); whatever
speech is open then is flushed as a final segment, not lost.

Turn mode (``VadParams.turn_silence_ms``): the participants of a call share a
:class:`Floor`; when one starts talking, the others' endpointers yield the floor
(:meth:`streamer.vad.Endpointer.yield_floor`), which ends their open turn at its pause.

Speculation (``VadParams.speculate_ms``): when the endpointer offers a tentative segment
(silence has begun) and the ASR is idle, it is transcribed at once; if the segment that
closes has the same bounds the result is used (the ASR ran during the silence wait),
otherwise it is discarded (``streamer_asr_speculation_total{outcome}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import weakref
from collections.abc import Callable

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from cberl_model.features.media import SAMPLE_RATE
from contracts.clock import now_ms
from contracts.events import ModalityFeatures, UtteranceEvent
from streamer.analyzer import AnalyzedSegment, SegmentAnalyzer
from streamer.audio import AudioDecoder
from streamer.frames import SpeechSegment
from streamer.metrics import StreamerMetrics
from streamer.sequencer import CallSequencer, EventFactory
from streamer.vad import Endpointer, VadParams

log = logging.getLogger(__name__)

_FRAMES_PER_20MS = SAMPLE_RATE // 50


class Floor:
    """Who is in one call's conversation (turn mode): speech onsets are told to the others."""

    def __init__(self) -> None:
        self._members: weakref.WeakSet[ParticipantPipeline] = weakref.WeakSet()

    def join(self, pipeline: ParticipantPipeline) -> None:
        self._members.add(pipeline)

    def leave(self, pipeline: ParticipantPipeline) -> None:
        self._members.discard(pipeline)

    def speech_started(self, speaker: ParticipantPipeline, arrival_ms: int) -> None:
        for other in list(self._members):
            if other is not speaker and other.speaker.speaker_id != speaker.speaker.speaker_id:
                other.yield_floor(arrival_ms)


_FLOORS: weakref.WeakKeyDictionary[CallSequencer, Floor] = weakref.WeakKeyDictionary()
"""One floor per call, keyed by the call's sequencer (lives as long as the call)."""


def floor_of(sequencer: CallSequencer) -> Floor:
    """The call's :class:`Floor` (made on first use)."""
    floor = _FLOORS.get(sequencer)
    if floor is None:
        floor = _FLOORS[sequencer] = Floor()
    return floor


@dataclasses.dataclass(frozen=True)
class Speaker:
    """Who a pipeline belongs to."""

    call_id: str
    speaker_id: str
    name: str


class ParticipantPipeline:
    """The media pipeline of one participant of one call.

    Args:
        speaker: The participant.
        sequencer: The call's sequencer (orders utterances across its participants).
        analyzer: The process's shared ASR + featurizer stage.
        media_offset_ms: Called once with the wall-clock ms of the first audio frame; returns
            the participant's offset on the call timeline (``start_ms``/``end_ms`` base).
        vad: Endpointing parameters.
        video_fps: Video frames sampled per second while the participant speaks (0: none).
    """

    def __init__(self, speaker: Speaker, sequencer: CallSequencer, analyzer: SegmentAnalyzer,
                 metrics: StreamerMetrics, media_offset_ms: Callable[[int], int], vad: VadParams,
                 video_fps: float) -> None:
        self.speaker = speaker
        self._sequencer = sequencer
        self._analyzer = analyzer
        self._metrics = metrics
        self._media_offset = media_offset_ms
        self._endpointer = Endpointer(vad)
        self._floor = floor_of(sequencer) if vad.turn_silence_ms is not None else None
        self._video_fps = video_fps
        self._max_frames = max(int(video_fps * vad.max_utterance_s), 1)
        self._frames: list[np.ndarray] = []
        self._last_frame_s = 0.0
        self.offset_ms: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._audio_task: asyncio.Task[None] | None = None
        self._speculation: tuple[int, int, asyncio.Task[AnalyzedSegment]] | None = None

    def add_track(self, track: MediaStreamTrack) -> None:
        """Start consuming an audio or video track."""
        if track.kind == "audio":
            self._audio_task = self._spawn(self._consume_audio(track), "audio")
        elif track.kind == "video" and self._video_fps > 0:
            self._spawn(self._consume_video(track), "video")

    async def close(self, timeout_s: float = 5.0) -> None:
        """Wait for the audio loop to flush (its track has ended), then for recognition."""
        if self._audio_task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._audio_task), timeout_s)
        for task in list(self._tasks):
            if task.get_name().endswith(":video"):
                task.cancel()
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)

    def _spawn(self, coro: object, what: str) -> asyncio.Task[None]:
        name = f"{self.speaker.call_id}:{self.speaker.speaker_id}:{what}"
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def yield_floor(self, arrival_ms: int) -> None:
        """Another participant started talking: end this one's open turn at its pause."""
        segment = self._endpointer.yield_floor(arrival_ms)
        if segment is not None:
            self._submit(segment)

    async def _consume_audio(self, track: MediaStreamTrack) -> None:
        decoder = AudioDecoder()
        self._analyzer.stream_opened()
        if self._floor is not None:
            self._floor.join(self)
        try:
            while True:
                frame = await track.recv()
                arrival_ms = now_ms()
                chunk = decoder.decode(frame)  # type: ignore[arg-type]
                if chunk is None:
                    continue
                if self.offset_ms is None:
                    self.offset_ms = self._media_offset(arrival_ms)
                if chunk.gap_samples:
                    self._metrics.dropped_audio_frames.inc(chunk.gap_samples / _FRAMES_PER_20MS)
                starts = self._endpointer.speech_starts
                for segment in self._endpointer.feed(chunk.samples, arrival_ms):
                    self._submit(segment)
                tentative = self._endpointer.take_tentative()
                if tentative is not None:
                    self._speculate(tentative)
                if self._floor is not None and self._endpointer.speech_starts != starts:
                    self._floor.speech_started(self, arrival_ms)
        except MediaStreamError:
            log.info("audio of %s in call %s ended", self.speaker.speaker_id, self.speaker.call_id)
        finally:
            self._analyzer.stream_closed()
            if self._floor is not None:
                self._floor.leave(self)
            segment = self._endpointer.finish(now_ms())
            if segment is not None:
                self._submit(segment)

    async def _consume_video(self, track: MediaStreamTrack) -> None:
        """Keep RGB frames at ``video_fps`` while the participant speaks (wall-clock sampling)."""
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now_s = time.monotonic()
                if not self._endpointer.in_speech or now_s - self._last_frame_s < 1 / self._video_fps:
                    continue
                self._last_frame_s = now_s
                if len(self._frames) >= self._max_frames:
                    self._metrics.dropped_video_frames.inc()
                    continue
                self._frames.append(frame.to_ndarray(format="rgb24"))  # type: ignore[union-attr]

    def _speculate(self, tentative: SpeechSegment) -> None:
        """Transcribe a tentative segment now if the ASR is idle and no video is attached."""
        self._drop_speculation()
        if self._frames or not self._analyzer.idle:
            return
        task = asyncio.ensure_future(self._analyzer.process(tentative, self._video_fps))
        self._speculation = (tentative.start_sample, tentative.end_sample, task)

    def _drop_speculation(self) -> None:
        if self._speculation is not None:
            self._speculation[2].cancel()
            self._speculation = None
            self._metrics.asr_speculation.labels(outcome="wasted").inc()

    def _submit(self, segment: SpeechSegment) -> None:
        """Reserve the segment's place in the call order and recognise it in the background."""
        frames, self._frames = tuple(self._frames), []
        if frames:
            segment = dataclasses.replace(segment, frames=frames)
        speculative = None
        bounds = (segment.start_sample, segment.end_sample)
        if self._speculation is not None and self._speculation[:2] == bounds and not frames:
            speculative, self._speculation = self._speculation[2], None
            self._metrics.asr_speculation.labels(outcome="used").inc()
        else:
            self._drop_speculation()
        slot = self._sequencer.reserve()
        self._spawn(self._analyze(segment, slot, speculative), f"segment-{segment.start_sample}")

    async def _analyze(self, segment: SpeechSegment, slot: asyncio.Future[EventFactory | None],
                       speculative: asyncio.Future[AnalyzedSegment] | None = None) -> None:
        try:
            if speculative is not None:
                analyzed = dataclasses.replace(await speculative, segment=segment)
            else:
                analyzed = await self._analyzer.process(segment, self._video_fps)
        except Exception as exc:  # a failing stage must not stop the call: report and go on
            log.exception("recognition failed for %s in call %s", self.speaker.speaker_id,
                          self.speaker.call_id)
            self._metrics.utterances.labels(outcome="error").inc()
            slot.set_exception(exc)
            return
        transcript = analyzed.transcript
        if transcript.duration_s > 0:
            self._metrics.asr_rtf.observe(transcript.compute_s / transcript.duration_s)
        self._metrics.asr_batch_size.observe(analyzed.batch_size)
        if analyzed.degraded:
            self._metrics.asr_degraded_segments.inc()
        if analyzed.discarded:
            self._metrics.utterances.labels(outcome="no_speech").inc()
            slot.set_result(None)
        else:
            slot.set_result(self._factory(analyzed))

    def _factory(self, analyzed: AnalyzedSegment) -> EventFactory:
        segment, transcript = analyzed.segment, analyzed.transcript
        offset = self.offset_ms or 0
        speaker = self.speaker
        features = ModalityFeatures(**{m: None if v is None else [float(x) for x in v]
                                       for m, v in (analyzed.features or {}).items()})

        start_ms = offset + segment.start_sample * 1000 // SAMPLE_RATE

        def build(seq: int) -> UtteranceEvent:
            self._metrics.utterances.labels(outcome="published").inc()
            return UtteranceEvent(
                call_id=speaker.call_id, seq=seq, speaker_id=speaker.speaker_id,
                utterance_id=f"{speaker.call_id}:{speaker.speaker_id}:{start_ms}",
                speaker_name=speaker.name, start_ms=start_ms,
                end_ms=offset + segment.end_sample * 1000 // SAMPLE_RATE,
                text=transcript.text, asr_confidence=transcript.confidence, features=features,
                feature_spec_id=self._analyzer.feature_spec_id,
                end_of_speech_at=segment.end_of_speech_at_ms)

        return build
