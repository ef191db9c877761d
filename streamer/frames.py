"""The typed values that flow between the streamer's stages (units in the field names)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class AudioChunk:
    """Decoded, resampled audio of one participant.

    Attributes:
        samples: Mono float32 in [-1, 1] at 16 kHz.
        start_sample: Position of the first sample on the participant's media timeline
            (16 kHz samples since the participant's first audio frame).
        gap_samples: Silence inserted before ``samples`` for packets that never arrived.
    """

    samples: np.ndarray
    start_sample: int
    gap_samples: int = 0


@dataclass(frozen=True)
class SpeechSegment:
    """One endpointed stretch of speech (VAD output), not yet transcribed.

    Attributes:
        audio: The segment's samples (16 kHz mono float32), pads included.
        start_sample: First sample on the participant's media timeline.
        end_sample: One past the last sample.
        reason: Why it ended: ``silence``, ``max_length`` or ``hangup``.
        end_of_speech_at_ms: Wall-clock epoch ms when the last speech sample arrived.
        endpointed_at_ms: Wall-clock epoch ms when the endpointer closed the segment.
    """

    audio: np.ndarray
    start_sample: int
    end_sample: int
    reason: str
    end_of_speech_at_ms: int
    endpointed_at_ms: int
    frames: tuple[np.ndarray, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Transcript:
    """Our own ASR result, converted at the faster-whisper boundary.

    Attributes:
        text: The transcript, stripped; empty when nothing was recognised.
        confidence: ``exp`` of the mean token log-probability, in [0, 1].
        no_speech_prob: Whisper's probability that the audio holds no speech.
        duration_s: Audio length transcribed.
        compute_s: Wall time the model took.
    """

    text: str
    confidence: float
    no_speech_prob: float
    duration_s: float
    compute_s: float
