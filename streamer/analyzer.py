"""Transcribe-and-featurize stage: a speech segment in, the fields of an utterance out.

Runs ASR and the shared featurizers together on one small thread pool, shared by every
call of the process (one Whisper model, one text encoder): the event loop only awaits.

No invented text: Whisper hallucinates on noise and silence ("Thank you.", WhisperLive
#246), so a segment is discarded (``None``) when its transcript is empty or Whisper itself
says it probably holds no speech (``no_speech_prob`` above ``max_no_speech_prob``, 0.6 by
default, the threshold faster-whisper uses for its own silence skipping).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from cberl_model.artifact import load_artifact
from cberl_model.features.featurizers import FeaturizerSet
from cberl_model.features.media import UtteranceMedia
from streamer.asr import Transcriber
from streamer.frames import SpeechSegment, Transcript
from streamer.settings import StreamerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalyzedSegment:
    """A transcribed segment and its features (an utterance event minus its seq).

    ``features`` is ``None`` when the segment was discarded as holding no speech.
    """

    segment: SpeechSegment
    transcript: Transcript
    features: dict[str, np.ndarray | None] | None

    @property
    def discarded(self) -> bool:
        return self.features is None


class SegmentAnalyzer:
    """ASR + featurizers behind an async :meth:`process`.

    Args:
        transcriber: The process's one ASR model.
        featurizers: The model's featurizers (text, and audio/visual when it uses them).
        max_no_speech_prob: Discard threshold on Whisper's no-speech probability.
        threads: Pool size; 1 on a small CPU (a second thread only contends), more on a GPU.
    """

    def __init__(self, transcriber: Transcriber, featurizers: FeaturizerSet,
                 max_no_speech_prob: float = 0.6, threads: int = 1,
                 model_card: dict[str, object] | None = None) -> None:
        self.model_card = model_card or {}
        """What ``GET /v1/model`` shows: model id, labels, feature spec id."""
        self._transcriber = transcriber
        self._featurizers = featurizers
        self._max_no_speech_prob = max_no_speech_prob
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="asr")

    @classmethod
    def load(cls, settings: StreamerSettings) -> SegmentAnalyzer:
        """Load the ASR model and the model artifact's featurizers (seconds; once per process)."""
        artifact = load_artifact(settings.model_dir)
        transcriber = Transcriber(settings.whisper_model, settings.whisper_device, settings.whisper_beam_size)
        featurizers = FeaturizerSet.from_artifact(artifact, device=settings.whisper_device)
        card = {"model_id": artifact.model_id, "labels": list(artifact.labels),
                "feature_spec_id": featurizers.feature_spec_id, "modalities": list(featurizers.modalities)}
        return cls(transcriber, featurizers, settings.max_no_speech_prob,
                   settings.asr_threads, card)

    @property
    def feature_spec_id(self) -> str:
        return self._featurizers.feature_spec_id

    async def process(self, segment: SpeechSegment, frame_rate: float) -> AnalyzedSegment:
        """Transcribe and featurize off the loop (no features when it holds no speech)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._analyze, segment, frame_rate)

    def _analyze(self, segment: SpeechSegment, frame_rate: float) -> AnalyzedSegment:
        transcript = self._transcriber.transcribe(segment.audio)
        if not transcript.text or transcript.no_speech_prob > self._max_no_speech_prob:
            log.info("discarded a %.2f s segment: text %r, no_speech_prob %.2f",
                     transcript.duration_s, transcript.text, transcript.no_speech_prob)
            return AnalyzedSegment(segment=segment, transcript=transcript, features=None)
        media = UtteranceMedia(text=transcript.text, audio=segment.audio, frames=segment.frames,
                               frame_rate=frame_rate if segment.frames else 0.0)
        features = self._featurizers.featurize([media])[0]
        return AnalyzedSegment(segment=segment, transcript=transcript, features=features)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
