"""Dead-letter records: what failed, why, and where it came from, with the raw payload."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from contracts.clock import now_ms

Reason = Literal["invalid", "feature_error", "late", "after_call_end", "processing_error",
                 "invalid_output"]
"""``invalid``: bad JSON, failed validation or unknown schema_version; ``feature_error``:
vectors that do not fit the model; ``late``: a seq that was given up on (gap timeout) and
arrived afterwards; ``after_call_end``: an utterance past the call's ``last_seq``;
``processing_error``: an unexpected error while processing the record's micro-batch;
``invalid_output``: an Emotion event that failed its own schema (a bug, never published)."""


@dataclass(frozen=True)
class Incoming:
    """One raw record of the utterances topic and where it came from."""

    value: bytes
    key: bytes | None
    topic: str
    partition: int
    offset: int


class DeadLetter(BaseModel):
    """The value written to the dead-letter topic (key: the original record's key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: Reason
    error: str
    topic: str
    partition: int
    offset: int
    payload_text: str | None = None
    payload_base64: str | None = None
    dead_lettered_at: int

    @classmethod
    def of(cls, record: Incoming, reason: Reason, error: str) -> DeadLetter:
        """The dead letter of ``record``; the payload as text when it is UTF-8, else base64."""
        try:
            text, b64 = record.value.decode("utf-8"), None
        except UnicodeDecodeError:
            text, b64 = None, base64.b64encode(record.value).decode()
        return cls(reason=reason, error=error[:2000], topic=record.topic, partition=record.partition,
                   offset=record.offset, payload_text=text, payload_base64=b64,
                   dead_lettered_at=now_ms())
