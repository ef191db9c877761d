"""Dead-letter records: what failed, why, where it came from, and a bounded excerpt of it.

A dead letter never carries more than :data:`EXCERPT_BYTES` of the payload (plus its size
and sha256), so any record the broker delivered, however large, can be dead-lettered
under the producer's request limit: the topic never stops on a record it cannot park.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from contracts.clock import now_ms

EXCERPT_BYTES = 4096
"""The most of a payload a dead letter copies."""

Reason = Literal["invalid", "feature_error", "late", "after_call_end", "processing_error",
                 "invalid_output", "unsigned", "forged", "unknown_call", "duplicate_utterance_id"]
"""``invalid``: bad JSON, failed validation or unknown schema_version; ``feature_error``:
vectors that do not fit the model; ``late``: a seq that was given up on (gap timeout) and
arrived afterwards; ``after_call_end``: an utterance past the call's ``last_seq``;
``processing_error``: an unexpected error while processing the record's micro-batch;
``invalid_output``: an Emotion event that failed its own schema (a bug, never published);
``unsigned`` / ``forged``: no valid ``cberl-signature`` header while ``event_secret`` is
set; ``unknown_call``: an utterance of a call the streamer never created (no
``cberl:call:{id}``) while ``require_known_calls`` is on; ``duplicate_utterance_id``: an
utterance id the call already has at another seq."""


@dataclass(frozen=True)
class Incoming:
    """One raw record of the utterances topic and where it came from."""

    value: bytes
    key: bytes | None
    topic: str
    partition: int
    offset: int
    headers: tuple[tuple[str, bytes], ...] = ()


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
    payload_size: int = 0
    payload_sha256: str = ""
    payload_truncated: bool = False
    dead_lettered_at: int

    @classmethod
    def of(cls, record: Incoming, reason: Reason, error: str) -> DeadLetter:
        """The dead letter of ``record``: at most :data:`EXCERPT_BYTES` of its payload (as
        text when that excerpt is UTF-8, else base64), the payload's size and sha256."""
        excerpt = record.value[:EXCERPT_BYTES]
        try:
            text, b64 = excerpt.decode("utf-8"), None
        except UnicodeDecodeError as exc:
            if len(record.value) > EXCERPT_BYTES and exc.start >= len(excerpt) - 3:
                text, b64 = excerpt[:exc.start].decode("utf-8"), None  # cut inside a character
            else:
                text, b64 = None, base64.b64encode(excerpt).decode()
        return cls(reason=reason, error=error[:2000], topic=record.topic, partition=record.partition,
                   offset=record.offset, payload_text=text, payload_base64=b64,
                   payload_size=len(record.value),
                   payload_sha256=hashlib.sha256(record.value).hexdigest(),
                   payload_truncated=len(record.value) > EXCERPT_BYTES, dead_lettered_at=now_ms())
