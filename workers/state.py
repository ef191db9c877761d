"""Per-call state in Redis, so any worker can take over any partition.

Layout (one writer per call: the worker that owns the call's partition):

- ``cberl:state:{call_id}``: one binary value, a :class:`CallRecord` (the recognizer's
  :class:`~cberl_model.inference.CallState`, the next expected seq, the early utterances
  held while a seq is missing, ...). Written whole (``SET ... EX``), so a save is atomic.
  Records written before the binary layout (JSON, under ``cberl:call:{call_id}``) are
  still read, once, and saved in the new form.
- ``cberl:call:{call_id}``: set by the streamer when it creates the call
  (:func:`contracts.call_stream.call_key`); the worker only checks it exists.
- ``cberl:emotions:{call_id}``: the call's Emotion events, a capped stream (fan-out).

Both keys the worker writes get the idle TTL again on every write, so abandoned calls
expire. Every operation retries a lost Redis with capped exponential back-off and clear
log lines; it never raises on an outage, so the agent stalls (and commits nothing) instead
of crash-looping, and resumes where it was when Redis is back.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import BusyLoadingError, ConnectionError, ReadOnlyError, TimeoutError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from cberl_model.framing import frame, pack_vectors, unframe, unpack_vectors
from cberl_model.inference import CallState
from contracts.call_stream import EMOTION_FIELD, call_key, call_stream_key
from workers.messages import Utterance, parse_message
from workers.metrics import WorkerMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")
RECORD_MAGIC = b"CBRC"
RECORD_VERSION = 2  # 1: the JSON document (still read)
SKIPPED_KEPT = 256  # skipped seq ranges remembered, to tell a late utterance from a duplicate
_LEN = struct.Struct("<I")  # length of the state inside a record
_TRANSIENT = (ConnectionError, TimeoutError, BusyLoadingError, ReadOnlyError, OSError)


def state_key(call_id: str) -> str:
    """The Redis key of a call's :class:`CallRecord`."""
    return f"cberl:state:{call_id}"


legacy_key = call_key
"""Where records were kept before the binary layout (now the streamer's call marker)."""


@dataclass(frozen=True)
class Emitted:
    """An Emotion event serialised once: the same bytes go to Kafka and the call stream."""

    call_id: str
    value: bytes


@dataclass
class CallRecord:
    """Everything a worker keeps about one call between micro-batches.

    Attributes:
        state: The recognizer's state (the speaker-graph window; its nodes carry seqs).
        next_seq: The seq the call needs next; lower seqs were applied or skipped.
        pending: Early utterances (``seq -> Utterance``) waiting for a gap.
        waiting_since_ms: When the worker started waiting for ``next_seq`` (None: not).
        skipped: Recent seq ranges given up on, ``[start, stop)``, newest last, at most
            :data:`SKIPPED_KEPT` (constant memory whatever the gap).
        end_seq: ``last_seq`` of a CallEnded that arrived before its last utterances.
    """

    state: CallState
    next_seq: int = 0
    pending: dict[int, Utterance] = field(default_factory=dict)
    waiting_since_ms: int | None = None
    skipped: list[tuple[int, int]] = field(default_factory=list)
    end_seq: int | None = None

    def to_bytes(self) -> bytes:
        """The binary form: versioned header, the state's own binary form, pending vectors.

        Layout: ``b"CBRC"``, a version byte, the header's length (uint32 LE), the header
        (JSON: ``next_seq``, ``waiting_since_ms``, ``skipped``, ``end_seq``, and each held
        utterance as ``[seq, event without vectors, {modality: dim}]``), the state's length
        (uint32 LE) and :meth:`CallState.to_bytes`, then the held vectors as float32.
        """
        pending = sorted(self.pending.items())
        sizes, blob = pack_vectors([u.vectors for _, u in pending])
        state = self.state.to_bytes()
        return frame(RECORD_MAGIC, RECORD_VERSION, {
            "next_seq": self.next_seq, "waiting_since_ms": self.waiting_since_ms,
            "skipped": [list(r) for r in self.skipped[-SKIPPED_KEPT:]], "end_seq": self.end_seq,
            "pending": [[seq, u.header(), dims] for (seq, u), dims in zip(pending, sizes, strict=True)],
        }, _LEN.pack(len(state)) + state + blob)

    @classmethod
    def from_bytes(cls, raw: bytes) -> CallRecord:
        """Inverse of :meth:`to_bytes`; also reads the JSON records of version 1.

        Raises:
            ValueError: On anything this code did not write (corrupt, foreign, or another
                version), with what is wrong.
        """
        raw = bytes(raw)
        if raw[:1] == b"{":
            return cls.from_json(raw)
        head, payload = unframe(raw, RECORD_MAGIC, RECORD_VERSION, "call record")
        try:
            (state_size,) = _LEN.unpack_from(payload)
            state = CallState.from_bytes(payload[_LEN.size:_LEN.size + state_size])
            rows = head["pending"]
            vectors = unpack_vectors([dims for _, _, dims in rows],
                                     payload[_LEN.size + state_size:])
            pending = {int(seq): Utterance.from_header(event, v)
                       for (seq, event, _), v in zip(rows, vectors, strict=True)}
            return cls(state=state, next_seq=int(head["next_seq"]), pending=pending,
                       waiting_since_ms=head["waiting_since_ms"],
                       skipped=[(int(a), int(b)) for a, b in head["skipped"]], end_seq=head["end_seq"])
        except (KeyError, TypeError, AttributeError, struct.error, json.JSONDecodeError,
                UnicodeDecodeError, ValueError) as exc:
            if str(exc).startswith("invalid call"):
                raise
            raise ValueError(f"invalid call record: {type(exc).__name__}: {exc}") from exc

    @classmethod
    def from_json(cls, raw: str | bytes) -> CallRecord:
        """A record of version 1 (one JSON document), upgraded.

        Its ``seqs`` table (utterance id -> seq) overrides the node seqs, which that
        version did not keep right; its held utterances are parsed once more and its
        skipped seqs become ranges.

        Raises:
            ValueError: On anything that is not such a record.
        """
        try:
            data = json.loads(raw)
            if data.get("version") != 1:
                raise ValueError(f"record version {data.get('version')!r}, expected {RECORD_VERSION}")
            state = CallState.from_dict(data["state"])
            seqs = {str(k): int(v) for k, v in data["seqs"].items()}
            for node in state.nodes:
                node.seq = seqs.get(node.utterance_id, node.seq)
            pending = {}
            for k, v in data["pending"].items():
                message = parse_message(v)
                if not isinstance(message, Utterance):
                    raise ValueError(f"held message {k} is not an utterance")
                pending[int(k)] = message
            return cls(state=state, next_seq=int(data["next_seq"]), pending=pending,
                       waiting_since_ms=data["waiting_since_ms"],
                       skipped=_ranges(int(s) for s in data["skipped"]), end_seq=data["end_seq"])
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"invalid call record: {type(exc).__name__}: {exc}") from exc
        except ValueError as exc:  # pydantic's ValidationError is one
            if str(exc).startswith(("record version", "invalid call")):
                raise
            raise ValueError(f"invalid call record: {type(exc).__name__}: {exc}") from exc


def _ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted seqs as ``[start, stop)`` runs."""
    out: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if out and out[-1][1] == seq:
            out[-1] = (out[-1][0], seq + 1)
        else:
            out.append((seq, seq + 1))
    return out


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
        """The stored record of each call (None: new, expired or unreadable — logged).

        A call without a record under :func:`state_key` is looked up under its pre-binary
        key; a JSON record there is upgraded (saved in the new form with the batch).
        """
        if not call_ids:
            return {}
        raws: list[Any] = await self._retrying(
            "load", lambda: self.client.mget([state_key(c) for c in call_ids]))
        missing = [c for c, raw in zip(call_ids, raws, strict=True) if raw is None]
        legacy: dict[str, Any] = {}
        if missing:
            old: list[Any] = await self._retrying(
                "load", lambda: self.client.mget([legacy_key(c) for c in missing]))
            legacy = {c: raw for c, raw in zip(missing, old, strict=True)
                      if raw is not None and bytes(raw).startswith(b'{"version"')}
        out: dict[str, CallRecord | None] = {}
        for call_id, raw in zip(call_ids, raws, strict=True):
            raw = raw if raw is not None else legacy.get(call_id)
            record = None
            if raw is not None:
                try:
                    record = CallRecord.from_bytes(raw)
                except ValueError as exc:
                    self.metrics.state_lost.inc()
                    log.error("call %s: stored state is unreadable (%s); the call continues with "
                              "a fresh graph", call_id, exc)
            out[call_id] = record
        return out

    async def known(self, call_ids: Sequence[str]) -> set[str]:
        """The calls whose :func:`contracts.call_stream.call_key` exists (the streamer made them)."""
        if not call_ids:
            return set()

        async def check() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for call_id in call_ids:
                    pipe.exists(call_key(call_id))
                return await pipe.execute()

        found = await self._retrying("call lookup", check)
        return {c for c, n in zip(call_ids, found, strict=True) if n}

    async def save(self, records: Iterable[tuple[str, CallRecord]]) -> None:
        """Write the records (TTL refreshed), all in one round trip."""
        items = list(records)
        if not items:
            return

        async def write() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for call_id, record in items:
                    pipe.set(state_key(call_id), record.to_bytes(), ex=self.ttl_s)
                await pipe.execute()

        await self._retrying("save", write)

    async def append_emotions(self, events: Sequence[Emitted]) -> None:
        """XADD every event to its call's capped stream (field ``event``: its JSON bytes)."""
        if not events:
            return

        async def write() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for event in events:
                    pipe.xadd(call_stream_key(event.call_id), {EMOTION_FIELD: event.value},
                              maxlen=self.stream_maxlen, approximate=True)
                for call_id in {e.call_id for e in events}:
                    pipe.expire(call_stream_key(call_id), self.ttl_s)
                await pipe.execute()

        await self._retrying("emotion fan-out", write)
