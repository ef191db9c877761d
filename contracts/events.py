"""The records of the two topics, ``utterances`` and ``emotions`` (DESIGN.md, "Contracts").

Both sides of each topic validate with these models: the streamer builds an
:class:`UtteranceEvent`, the workers parse it and build :class:`EmotionEvent` values;
anything that does not parse goes to the dead-letter topic with the validation error.
Bump :data:`SCHEMA_VERSION` on an incompatible change; readers reject other versions.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from contracts.clock import now_ms

SCHEMA_VERSION = 1

class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    call_id: str = Field(min_length=1, max_length=128)
    utterance_id: str = Field(min_length=1, max_length=256)
    seq: int = Field(ge=0, description="per-call, gapless, from 0")
    speaker_id: str = Field(min_length=1, max_length=128)


class ModalityFeatures(BaseModel):
    """One vector per modality; ``None`` where the modality is missing for the utterance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: list[float] | None = None
    audio: list[float] | None = None
    visual: list[float] | None = None

    @field_validator("text", "audio", "visual")
    @classmethod
    def _finite(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and not all(math.isfinite(v) for v in value):
            raise ValueError("feature vector has non-finite values")
        return value

    def as_dict(self) -> dict[str, list[float] | None]:
        return {"text": self.text, "audio": self.audio, "visual": self.visual}


class UtteranceEvent(_Event):
    """One endpointed, transcribed, featurized utterance of one call participant."""

    type: Literal["utterance"] = "utterance"
    speaker_name: str = ""
    start_ms: int = Field(ge=0, description="from the start of the call")
    end_ms: int = Field(ge=0)
    text: str = ""
    asr_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    features: ModalityFeatures = Field(default_factory=ModalityFeatures)
    feature_spec_id: str = Field(min_length=1)
    produced_at: int = Field(default_factory=now_ms, description="epoch ms, when published")
    end_of_speech_at: int | None = Field(
        default=None, description="epoch ms of the end of speech (for emit latency)")

    @model_validator(mode="after")
    def _ordered(self) -> UtteranceEvent:
        if self.end_ms < self.start_ms:
            raise ValueError(f"end_ms {self.end_ms} is before start_ms {self.start_ms}")
        return self


class CallEnded(BaseModel):
    """Control event on ``utterances``: the call is over, finalise every label.

    ``last_seq`` is the seq of the call's last utterance (-1 if it had none), so a worker
    that has not yet seen every utterance can wait for the gap to fill before finalising.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    type: Literal["call_ended"] = "call_ended"
    call_id: str = Field(min_length=1, max_length=128)
    last_seq: int = Field(ge=-1)
    produced_at: int = Field(default_factory=now_ms)


class EmotionEvent(_Event):
    """A (possibly revised) emotion label of one utterance. Keep the highest revision."""

    label: str
    scores: dict[str, float]
    revision: int = Field(ge=0, description="0 = first (past-only context), then increasing")
    final: bool
    model_id: str
    latency_ms: float | None = Field(default=None, description="end of speech -> emit")
    emitted_at: int = Field(default_factory=now_ms)


class TranscriptEntry(BaseModel):
    """An utterance as subscribers see it: who said what, when (no feature vectors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    call_id: str
    utterance_id: str
    seq: int = Field(ge=0)
    speaker_id: str
    speaker_name: str = ""
    start_ms: int = Field(ge=0)
    end_ms: int = Field(ge=0)
    text: str = ""
    asr_confidence: float | None = None

    @classmethod
    def of(cls, event: UtteranceEvent) -> TranscriptEntry:
        return cls(**event.model_dump(include=set(cls.model_fields) - {"schema_version"}))


UtterancesMessage = Annotated[UtteranceEvent | CallEnded, Field(discriminator="type")]
"""What the ``utterances`` topic carries: utterances, and the end of each call."""

_UTTERANCES_ADAPTER: TypeAdapter[UtteranceEvent | CallEnded] = TypeAdapter(UtterancesMessage)


def parse_utterances_message(raw: bytes | str) -> UtteranceEvent | CallEnded:
    """Parse one ``utterances`` record. Raises :class:`pydantic.ValidationError`."""
    return _UTTERANCES_ADAPTER.validate_json(raw)
