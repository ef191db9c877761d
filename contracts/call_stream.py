"""The call stream: one capped Redis stream per call that subscribers replay.

Workers append every Emotion event (field :data:`EMOTION_FIELD`); the streamer appends
the transcript of every utterance it publishes (field :data:`TRANSCRIPT_FIELD`), one field
per entry. So a subscriber reads who said what and how it was labelled from one offset.
Both writers cap it with ``call_stream_maxlen`` and expire it after ``call_stream_ttl_s``
idle (one setting each, in :class:`contracts.settings.SharedSettings`).
"""

from __future__ import annotations

EMOTION_FIELD = "event"
"""Entry field holding an :class:`~contracts.events.EmotionEvent` (JSON)."""

TRANSCRIPT_FIELD = "utterance"
"""Entry field holding a :class:`~contracts.events.TranscriptEntry` (JSON)."""


def call_stream_key(call_id: str) -> str:
    """The Redis key of ``call_id``'s call stream."""
    return f"cberl:emotions:{call_id}"


def call_key(call_id: str) -> str:
    """The Redis key that says a call exists: the streamer sets it when the call is created
    (expiring with ``call_stream_ttl_s``, refreshed while the call is active); workers
    dead-letter utterances of calls without it, so events for calls that never existed are
    not processed."""
    return f"cberl:call:{call_id}"
