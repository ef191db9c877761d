"""Per-call state in Redis, so any worker can take over any partition.

Layout (one writer per call: the worker that owns the call's partition):

- ``cberl:call:{call_id}``: one JSON document, a :class:`CallRecord` (the recognizer's
  :class:`~cberl_model.inference.CallState`, the next expected seq, the early utterances
  held while a seq is missing, ...). Written whole (``SET ... EX``), so a save is atomic.
- ``cberl:emotions:{call_id}``: the call's Emotion events, a capped stream (fan-out).

Both keys get the idle TTL again on every write, so abandoned calls expire.
Every operation retries a lost Redis with capped exponential back-off and clear log
lines; it never raises on an outage, so the agent stalls (and commits nothing) instead of
crash-looping, and resumes where it was when Redis is back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import BusyLoadingError, ConnectionError, ReadOnlyError, TimeoutError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from cberl_model.inference import CallState
from contracts.call_stream import EMOTION_FIELD, call_stream_key
from contracts.events import EmotionEvent
from workers.metrics import WorkerMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")
RECORD_VERSION = 1
SKIPPED_KEPT = 256  # seqs remembered as skipped, to tell a late utterance from a duplicate
_TRANSIENT = (ConnectionError, TimeoutError, BusyLoadingError, ReadOnlyError, OSError)


def call_key(call_id: str) -> str:
    """The Redis key of a call's :class:`CallRecord`."""
    return f"cberl:call:{call_id}"


@dataclass
class CallRecord:
    """Everything a worker keeps about one call between micro-batches.

    Attributes:
        state: The recognizer's state (the speaker-graph window).
        next_seq: The seq the call needs next; lower seqs were applied or skipped.
        seqs: ``utterance_id -> seq`` of the utterances still in the window (Emotion
            events carry the seq; the recognizer counts applied utterances instead).
        pending: Early utterances (``seq -> UtteranceEvent JSON``) waiting for a gap.
        waiting_since_ms: When the worker started waiting for ``next_seq`` (None: not).
        skipped: Recent seqs given up on (gap timeout or rejected), newest last.
        end_seq: ``last_seq`` of a CallEnded that arrived before its last utterances.
    """

    state: CallState
    next_seq: int = 0
    seqs: dict[str, int] = field(default_factory=dict)
    pending: dict[int, str] = field(default_factory=dict)
    waiting_since_ms: int | None = None
    skipped: list[int] = field(default_factory=list)
    end_seq: int | None = None

    def to_json(self) -> str:
        return json.dumps({
            "version": RECORD_VERSION, "state": self.state.to_dict(), "next_seq": self.next_seq,
            "seqs": self.seqs, "pending": {str(k): v for k, v in self.pending.items()},
            "waiting_since_ms": self.waiting_since_ms, "skipped": self.skipped[-SKIPPED_KEPT:],
            "end_seq": self.end_seq,
        }, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> CallRecord:
        """Inverse of :meth:`to_json`.

        Raises:
            ValueError: On anything this code did not write (corrupt or another version).
        """
        try:
            data = json.loads(raw)
            if data.get("version") != RECORD_VERSION:
                raise ValueError(f"record version {data.get('version')!r}, expected {RECORD_VERSION}")
            return cls(state=CallState.from_dict(data["state"]), next_seq=int(data["next_seq"]),
                       seqs={str(k): int(v) for k, v in data["seqs"].items()},
                       pending={int(k): str(v) for k, v in data["pending"].items()},
                       waiting_since_ms=data["waiting_since_ms"],
                       skipped=[int(s) for s in data["skipped"]], end_seq=data["end_seq"])
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"invalid call record: {type(exc).__name__}: {exc}") from exc


class CallStore:
    """Async access to call records and call streams, with outage retries.

    Args:
        client: A ``redis.asyncio`` client (injected; tests hand in their own).
        ttl_s: Idle expiry of a call's keys, refreshed on every write.
        stream_maxlen: Approximate cap of each call stream (``MAXLEN ~``).
        retry_max_s: Longest back-off between retries while Redis is unreachable.
        metrics: Where outages are counted.
    """

    def __init__(self, client: aioredis.Redis, ttl_s: int, stream_maxlen: int,
                 retry_max_s: float, metrics: WorkerMetrics) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.stream_maxlen = stream_maxlen
        self.retry_max_s = retry_max_s
        self.metrics = metrics

    async def _retrying(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """``op()``, retried until Redis answers (back-off from 50 ms up to ``retry_max_s``)."""

        def note(state: RetryCallState) -> None:
            assert state.outcome is not None and state.next_action is not None
            self.metrics.redis_errors.inc()
            failures, exc = state.attempt_number, state.outcome.exception()
            if failures == 1 or failures % 10 == 0:
                log.warning("redis unavailable during %s (%s: %s); attempt %d, retrying in %.2f s; "
                            "no offsets are committed meanwhile",
                            what, type(exc).__name__, exc, failures, state.next_action.sleep)

        async for attempt in AsyncRetrying(retry=retry_if_exception_type(_TRANSIENT), before_sleep=note,
                                           wait=wait_exponential(0.05, max=self.retry_max_s)):
            with attempt:
                result = await op()
        if (failures := attempt.retry_state.attempt_number - 1) > 0:
            log.warning("redis is back after %d failed attempts (%s)", failures, what)
        return result

    async def load(self, call_ids: Sequence[str]) -> dict[str, CallRecord | None]:
        """The stored record of each call (None: new, expired or unreadable — logged)."""
        if not call_ids:
            return {}
        raws: list[Any] = await self._retrying(
            "load", lambda: self.client.mget([call_key(c) for c in call_ids]))
        out: dict[str, CallRecord | None] = {}
        for call_id, raw in zip(call_ids, raws, strict=True):
            record = None
            if raw is not None:
                try:
                    record = CallRecord.from_json(raw)
                except ValueError as exc:
                    self.metrics.state_lost.inc()
                    log.error("call %s: stored state is unreadable (%s); the call continues with "
                              "a fresh graph", call_id, exc)
            out[call_id] = record
        return out

    async def save(self, records: Iterable[tuple[str, CallRecord]]) -> None:
        """Write the records (TTL refreshed), all in one round trip."""
        items = list(records)
        if not items:
            return

        async def write() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for call_id, record in items:
                    pipe.set(call_key(call_id), record.to_json(), ex=self.ttl_s)
                await pipe.execute()

        await self._retrying("save", write)

    async def append_emotions(self, events: Sequence[EmotionEvent]) -> None:
        """XADD every event to its call's capped stream (field ``event``: the JSON)."""
        if not events:
            return

        async def write() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for event in events:
                    key = call_stream_key(event.call_id)
                    pipe.xadd(key, {EMOTION_FIELD: event.model_dump_json()},
                              maxlen=self.stream_maxlen, approximate=True)
                for call_id in {e.call_id for e in events}:
                    pipe.expire(call_stream_key(call_id), self.ttl_s)
                await pipe.execute()

        await self._retrying("emotion fan-out", write)
