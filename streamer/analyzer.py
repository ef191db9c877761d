"""Transcribe-and-featurize stage: speech segments in, the fields of utterances out.

One ASR thread per process, shared by every call (one Whisper model, one text encoder;
Whisper's own intra-op threads use the cores, ``whisper_cpu_threads``), so Whisper calls
never oversubscribe the CPU whatever the number of calls: the event loop only awaits.
Segments queue in arrival order; the thread takes up to ``max_batch`` of them at once
and transcribes them in one batched Whisper call (:meth:`streamer.asr.Transcriber.transcribe_batch`),
then featurizes them in one batch.

**Backlog**: :attr:`SegmentAnalyzer.backlog_s` is the audio (seconds) queued or being
transcribed; :mod:`streamer.capacity` admits new calls by it. **Degrading, never
dropping**: while the backlog exceeds ``degrade_backlog_s`` the thread takes the whole
queue as one batch (throughput over the latency of the first in it) and, when
``degrade_window_s`` is set, transcribes with that shorter encoder window (cheaper, worse
WER; unset by default because tiny.en's WER breaks below a 10 s window); it logs a
WARNING when it starts and an INFO when it stops, and counts such segments in
``streamer_asr_degraded_segments_total``. No segment is ever
dropped for load.

No invented text: Whisper hallucinates on noise and silence ("Thank you.", WhisperLive
#246), so a segment is discarded (``None`` features) when its transcript is empty or
Whisper itself says it probably holds no speech (``no_speech_prob`` above
``max_no_speech_prob``, 0.75 by default) and is unsure of the text (mean token
log-probability below -1): faster-whisper's own silence rule, with the threshold moved
from its 0.6 because the 10 s window lifts the no-speech probability of short real words
("Really?" 0.41 at 30 s, 0.61 at 10 s; "Oh" 0.64).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from cberl_model.artifact import load_features
from cberl_model.features.featurizers import FeaturizerSet
from cberl_model.features.media import SAMPLE_RATE, UtteranceMedia
from cberl_model.runtime import select_precision
from streamer.asr import Transcriber
from streamer.frames import SpeechSegment, Transcript
from streamer.settings import StreamerSettings

log = logging.getLogger(__name__)

_MIN_CONFIDENCE = 0.368
"""exp(-1): faster-whisper's ``log_prob_threshold``. Like faster-whisper, a segment counts as
silence only when Whisper both thinks so (``no_speech_prob``) and is unsure of its text:
with a 10 s window short real words ("Really?") reach a no-speech probability of 0.6."""


def heard_nothing(transcript: Transcript, max_no_speech_prob: float) -> bool:
    """Whether a segment is discarded: no text, or silence by Whisper's two-sided rule.

    Also what ASR-robust training applies (``cberl_model/augment/asr_text.py``), so the
    model trains on the texts calls keep."""
    return not transcript.text or (transcript.no_speech_prob > max_no_speech_prob
                                   and transcript.confidence < _MIN_CONFIDENCE)


@dataclass(frozen=True)
class AnalyzedSegment:
    """A transcribed segment and its features (an utterance event minus its seq).

    ``features`` is ``None`` when the segment was discarded as holding no speech.
    """

    segment: SpeechSegment
    transcript: Transcript
    features: dict[str, np.ndarray | None] | None
    degraded: bool = False
    batch_size: int = 1

    @property
    def discarded(self) -> bool:
        return self.features is None


@dataclass
class _Job:
    segment: SpeechSegment
    frame_rate: float
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[AnalyzedSegment]
    duration_s: float


class SegmentAnalyzer:
    """ASR + featurizers behind an async :meth:`process`, on one batching ASR thread.

    Args:
        transcriber: The process's one ASR model.
        featurizers: The model's featurizers (text, and audio/visual when it uses them).
        max_no_speech_prob: Discard threshold on Whisper's no-speech probability.
        max_batch: Segments per Whisper call while not degraded (1: no batching). On
            this 2-core CPU a batch of 2-4 costs 0.72-0.74 of single calls per segment
            (``docs/asr_window.json``); on a GPU far less.
        degrade_backlog_s: Backlog (s of audio) above which ASR degrades.
        degrade_window_s: The encoder window while degraded.
    """

    def __init__(self, transcriber: Transcriber, featurizers: FeaturizerSet,
                 max_no_speech_prob: float = 0.6, max_batch: int = 1,
                 model_card: dict[str, object] | None = None, degrade_backlog_s: float = 8.0,
                 degrade_window_s: float | None = None) -> None:
        self.model_card = model_card or {}
        """What ``GET /v1/model`` shows: model id, labels, feature spec id."""
        self._transcriber = transcriber
        self._featurizers = featurizers
        self._max_no_speech_prob = max_no_speech_prob
        self.max_batch = max(1, max_batch)
        self.degrade_backlog_s = degrade_backlog_s
        self.degrade_window_s = degrade_window_s
        self._queue: deque[_Job] = deque()
        self._wake = threading.Condition()
        self._queued_s = 0.0
        self._running_s = 0.0
        self._busy_s = 0.0                 # ASR thread busy time, cumulative
        self.degraded = False
        self.degraded_segments = 0
        self.batches = 0
        self.active_streams = 0
        """Live audio streams (participants) feeding this analyzer: capacity per stream."""
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="asr", daemon=True)
        self._thread.start()

    @classmethod
    def load(cls, settings: StreamerSettings) -> SegmentAnalyzer:
        """Load the ASR model and the model artifact's featurizers (seconds; once per process)."""
        artifact = load_features(settings.model_dir, precision=select_precision(
            settings.encoder_precision, torch.device("cpu")))
        transcriber = Transcriber(settings.whisper_model, settings.whisper_device,
                                  settings.whisper_beam_size, window_s=settings.asr_window_s)
        featurizers = FeaturizerSet.from_artifact(artifact, device=settings.whisper_device)
        card = {"model_id": artifact.model_id, "labels": list(artifact.labels),
                "feature_spec_id": featurizers.feature_spec_id, "modalities": list(featurizers.modalities)}
        max_batch = settings.asr_max_batch or (16 if transcriber.device == "cuda" else 4)
        return cls(transcriber, featurizers, settings.max_no_speech_prob, max_batch, card,
                   settings.asr_degrade_backlog_s, settings.asr_degrade_window_s)

    @property
    def feature_spec_id(self) -> str:
        return self._featurizers.feature_spec_id

    @property
    def backlog_s(self) -> float:
        """Seconds of audio queued for ASR or being transcribed now."""
        return self._queued_s + self._running_s

    def stream_opened(self) -> None:
        self.active_streams += 1

    def stream_closed(self) -> None:
        self.active_streams = max(self.active_streams - 1, 0)

    @property
    def busy_s(self) -> float:
        """Cumulative seconds the ASR thread has spent working (utilization = its rate)."""
        return self._busy_s

    async def process(self, segment: SpeechSegment, frame_rate: float) -> AnalyzedSegment:
        """Transcribe and featurize off the loop (no features when it holds no speech)."""
        loop = asyncio.get_running_loop()
        job = _Job(segment, frame_rate, loop, loop.create_future(), segment.audio.size / SAMPLE_RATE)
        with self._wake:
            if self._closed:
                raise RuntimeError("the analyzer is closed")
            self._queue.append(job)
            self._queued_s += job.duration_s
            self._wake.notify()
        try:
            return await job.future
        except asyncio.CancelledError:  # a discarded speculation: leave the queue if not started
            with self._wake:
                if job in self._queue:
                    self._queue.remove(job)
                    self._queued_s = max(self._queued_s - job.duration_s, 0.0)
            raise

    @property
    def idle(self) -> bool:
        """Nothing queued or running: speculative work delays nobody."""
        return not self._queue and self._running_s == 0.0

    def _take(self) -> tuple[list[_Job], bool] | None:
        with self._wake:
            while not self._queue and not self._closed:
                self._wake.wait()
            if self._closed:
                return None
            backlog_s = self._queued_s
            degraded = backlog_s > self.degrade_backlog_s
            limit = len(self._queue) if degraded else self.max_batch
            jobs = [self._queue.popleft() for _ in range(min(limit, len(self._queue)))]
            taken_s = sum(j.duration_s for j in jobs)
            self._queued_s = max(self._queued_s - taken_s, 0.0) if self._queue else 0.0
            self._running_s = taken_s
        if degraded != self.degraded:
            self.degraded = degraded
            if degraded:
                log.warning("ASR degraded: %.1f s of audio queued (> %.1f s): whole-queue batches, "
                            "encoder window %.0f s, until it drains", backlog_s, self.degrade_backlog_s,
                            self.degrade_window_s or self._transcriber.window_s)
            else:
                log.info("ASR back to normal: %.1f s of audio queued", backlog_s)
        return jobs, degraded

    def _work(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            jobs, degraded = taken
            started = time.perf_counter()
            try:
                results: list[AnalyzedSegment | BaseException] = list(self._analyze(jobs, degraded))
            except Exception as exc:  # a failing batch fails its segments, not the thread
                log.exception("ASR of a batch of %d segments failed", len(jobs))
                results = [exc] * len(jobs)
            self._busy_s += time.perf_counter() - started
            with self._wake:
                self._running_s = 0.0
            if degraded:
                self.degraded_segments += len(jobs)
            self.batches += 1
            for job, result in zip(jobs, results, strict=True):
                job.loop.call_soon_threadsafe(_resolve, job.future, result)

    def _analyze(self, jobs: list[_Job], degraded: bool) -> list[AnalyzedSegment]:
        window_s = self.degrade_window_s if degraded else None
        transcripts = self._transcriber.transcribe_batch([j.segment.audio for j in jobs], window_s)
        out: list[AnalyzedSegment | None] = [None] * len(jobs)
        media, kept = [], []
        for i, (job, transcript) in enumerate(zip(jobs, transcripts, strict=True)):
            if heard_nothing(transcript, self._max_no_speech_prob):
                log.info("discarded a %.2f s segment: text %r, no_speech_prob %.2f",
                         transcript.duration_s, transcript.text, transcript.no_speech_prob)
                out[i] = AnalyzedSegment(job.segment, transcript, None, degraded, len(jobs))
                continue
            segment = job.segment
            media.append(UtteranceMedia(text=transcript.text, audio=segment.audio, frames=segment.frames,
                                        frame_rate=job.frame_rate if segment.frames else 0.0))
            kept.append(i)
        if media:
            for i, features in zip(kept, self._featurizers.featurize(media), strict=True):
                out[i] = AnalyzedSegment(jobs[i].segment, transcripts[i], features, degraded, len(jobs))
        return [a for a in out if a is not None]

    def close(self) -> None:
        with self._wake:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._wake.notify_all()
        for job in pending:
            job.loop.call_soon_threadsafe(_resolve, job.future, RuntimeError("the analyzer closed"))


def _resolve(future: asyncio.Future[AnalyzedSegment], result: AnalyzedSegment | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
