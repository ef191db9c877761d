"""Topic records with sensible defaults: ``utterance(seq, **overrides)``, ``emotion(...)``,
``call_ended(...)``.

Every field of the record can be overridden by keyword; the defaults make a valid record
of call ``c-test`` whose ids follow from ``call_id`` and ``seq`` (``c-test-u3``).
"""

from __future__ import annotations

from typing import Any

from contracts.events import CallEnded, EmotionEvent, UtteranceEvent

CALL_ID = "c-test"
SPEAKER_ID = "p-a"


def utterance(seq: int = 0, *, call_id: str = CALL_ID, **overrides: Any) -> UtteranceEvent:
    """Utterance ``seq`` of ``call_id``: 900 ms of speech starting at ``seq`` seconds, text ``line SEQ``."""
    fields: dict[str, Any] = {
        "call_id": call_id, "utterance_id": f"{call_id}-u{seq}", "seq": seq, "speaker_id": SPEAKER_ID,
        "start_ms": seq * 1000, "end_ms": seq * 1000 + 900, "text": f"line {seq}",
        "feature_spec_id": "fs-test"}
    return UtteranceEvent(**(fields | overrides))


def emotion(seq: int = 0, *, call_id: str = CALL_ID, **overrides: Any) -> EmotionEvent:
    """A first (revision 0, provisional) ``joy`` label of utterance ``seq`` of ``call_id``."""
    fields: dict[str, Any] = {
        "call_id": call_id, "utterance_id": f"{call_id}-u{seq}", "seq": seq, "speaker_id": SPEAKER_ID,
        "label": "joy", "scores": {"neutral": 0.3, "joy": 0.7}, "revision": 0, "final": False,
        "model_id": "m-test"}
    return EmotionEvent(**(fields | overrides))


def call_ended(call_id: str = CALL_ID, last_seq: int = -1, **overrides: Any) -> CallEnded:
    """The end of ``call_id`` whose last utterance was ``last_seq`` (-1: it had none)."""
    return CallEnded(**({"call_id": call_id, "last_seq": last_seq} | overrides))
