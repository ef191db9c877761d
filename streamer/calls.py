"""The registry of live calls: who is in each, its sequencer and its media timeline.

:class:`CallStore` keeps what a call needs to outlive a crash of this process in Redis
(:func:`live_call_key`): when it was created, its media clock's origin and the seq after
the last utterance the broker acknowledged. A participant who reconnects with a valid
token to a call this process does not know gets it back (:meth:`CallRegistry.restore`),
with the same timeline and gapless seqs. Ending the call deletes the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from aiortc import RTCPeerConnection
from redis.exceptions import RedisError

from contracts.clock import now_ms
from contracts.events import CallEnded, UtteranceEvent
from streamer.metrics import StreamerMetrics
from streamer.pipeline import ParticipantPipeline
from streamer.sequencer import CallSequencer

log = logging.getLogger(__name__)


@dataclass
class Participant:
    """One live connection of one participant."""

    pipeline: ParticipantPipeline
    pc: RTCPeerConnection
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the peer connection first reaches ``connected``."""


class Call:
    """One call: its participants, its ordering of utterances and its media clock.

    The call timeline starts at the first audio frame received from anyone; each
    participant's ``offset_ms`` is where their own first frame falls on it, so the
    ``start_ms``/``end_ms`` of everyone's utterances share one clock.
    """

    def __init__(self, call_id: str, sequencer: CallSequencer) -> None:
        self.call_id = call_id
        self.sequencer = sequencer
        self.created_at_ms = now_ms()
        self.participants: dict[str, Participant] = {}
        self.seats = 0
        """Participant seats reserved at creation (the names it was created with): counted
        against the streamer's capacity from then on, so calls created together cannot
        overbook it before anyone has joined (:mod:`streamer.capacity`)."""
        self.invites_minted = 0
        """Participant tokens minted with the call's invite token (bounded, see
        :func:`streamer.limits.check_invite`)."""
        self.ended = False
        self.idle_since_s: float | None = time.monotonic()
        """Monotonic time since which the call has had no participant (``None``: it has some)."""
        self._closing: set[asyncio.Task[None]] = set()
        self._t0_ms: int | None = None

    @property
    def t0_ms(self) -> int | None:
        """Where the call timeline starts (wall-clock ms of the first frame), once known."""
        return self._t0_ms

    def restore_timeline(self, t0_ms: int | None) -> None:
        """A restored call keeps its timeline (:class:`CallStore`)."""
        self._t0_ms = t0_ms

    def media_offset_ms(self, first_frame_ms: int) -> int:
        """A participant's offset on the call timeline, given their first frame's arrival."""
        if self._t0_ms is None:
            self._t0_ms = first_frame_ms
        return max(first_frame_ms - self._t0_ms, 0)

    def join(self, speaker_id: str, participant: Participant) -> None:
        """``participant`` is live; a previous connection of the same speaker is replaced
        at once and hung up in the background (a reconnect does not wait for its flush)."""
        old = self.participants.pop(speaker_id, None)
        self.participants[speaker_id] = participant
        self.idle_since_s = None
        if old is not None:
            task = asyncio.create_task(self._hang_up(old), name=f"{self.call_id}:{speaker_id}:replaced")
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def remove(self, speaker_id: str) -> bool:
        """Hang up one participant: close the connection, flush and recognise their speech."""
        participant = self.participants.pop(speaker_id, None)
        if participant is None:
            return False
        if not self.participants:
            self.idle_since_s = time.monotonic()
        await self._hang_up(participant)
        return True

    async def _hang_up(self, participant: Participant) -> None:
        await participant.pc.close()
        await participant.pipeline.close()
        current = asyncio.current_task()
        for task in participant.tasks:
            if task is not current:
                task.cancel()

    async def settle(self) -> None:
        """Wait for replaced connections still being hung up (before the call's end)."""
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def idle_for_s(self) -> float:
        """How long the call has had no participant (0 while it has some)."""
        return 0.0 if self.idle_since_s is None else time.monotonic() - self.idle_since_s

    def describe(self) -> dict[str, object]:
        """The call's public state (``GET /v1/calls/{id}``)."""
        return {"call_id": self.call_id, "created_at": self.created_at_ms, "ended": self.ended,
                "next_seq": self.sequencer.next_seq,
                "participants": [{"speaker_id": pid, "name": p.pipeline.speaker.name,
                                  "media_offset_ms": p.pipeline.offset_ms}
                                 for pid, p in self.participants.items()]}


class CallRegistry:
    """Every call of this process, by id."""

    def __init__(self, metrics: StreamerMetrics) -> None:
        self._calls: dict[str, Call] = {}
        self._metrics = metrics
        # counted from the registry when scraped, so it cannot drift
        metrics.active_participants.set_function(self.participant_count)

    def __len__(self) -> int:
        return len(self._calls)

    def participant_count(self) -> int:
        """Live participant connections over every call."""
        return sum(len(call.participants) for call in self._calls.values())

    def seats_in_use(self) -> int:
        """Seats held over every call: reserved at creation, or live, whichever is more."""
        return sum(max(call.seats, len(call.participants)) for call in self._calls.values())

    def add(self, call: Call) -> Call:
        self._calls[call.call_id] = call
        self._metrics.active_calls.set(len(self._calls))
        return call

    def get(self, call_id: str) -> Call | None:
        return self._calls.get(call_id)

    def __iter__(self) -> Iterator[Call]:
        return iter(list(self._calls.values()))

    async def restore(self, call_id: str, store: CallStore,
                      publish: Callable[[UtteranceEvent | CallEnded], bool]) -> Call | None:
        """The call from its Redis record (this process restarted), or ``None``."""
        stored = await store.load(call_id)
        existing = self.get(call_id)  # a concurrent join may have restored it meanwhile
        if existing is not None or stored is None:
            return existing
        call = self.add(new_call(call_id, publish, store, stored))
        log.info("call %s restored from Redis (next seq %d)", call_id, stored.next_seq)
        return call

    async def end(self, call: Call, timeout_s: float = 30.0) -> CallEnded:
        """Hang everyone up, wait for their last utterances, publish ``CallEnded``, forget it."""
        call.ended = True
        self._calls.pop(call.call_id, None)
        self._metrics.active_calls.set(len(self._calls))
        await asyncio.gather(*(call.remove(pid) for pid in list(call.participants)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(call.settle(), timeout_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(call.sequencer.drain(), timeout_s)
        return call.sequencer.end()


def live_call_key(call_id: str) -> str:
    """The Redis hash of a live call the streamer can restore (:class:`CallStore`)."""
    return f"cberl:streamer:call:{call_id}"


_SET_IF_LIVE = """
if redis.call('exists', KEYS[1]) == 1 then
  redis.call('hset', KEYS[1], unpack(ARGV, 2))
  redis.call('expire', KEYS[1], ARGV[1])
end
"""


@dataclass(frozen=True)
class StoredCall:
    call_id: str
    created_at_ms: int
    next_seq: int
    t0_ms: int | None
    invites_minted: int = 0


class CallStore:
    """A call's restart-survival record: ``created_at_ms``, ``t0_ms``, ``next_seq``,
    ``invites_minted``.

    Writes after creation go through one ordered background task (so ``next_seq`` only
    grows) and never delay publishing; a failed write is logged and the next one
    overwrites it. ``next_seq`` is written after the broker's ack (the publisher's
    ``on_published``), so a restored call never reuses a seq that reached the topic --
    except in the few milliseconds between an ack and this write (documented).
    """

    def __init__(self, redis: aioredis.Redis, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._queue: asyncio.Queue[tuple[str, dict[str, int] | None]] = asyncio.Queue(10_000)
        self._writer: asyncio.Task[None] | None = None

    async def created(self, call: Call) -> None:
        """Record a new call (best effort: without Redis it just cannot be restored)."""
        key = live_call_key(call.call_id)
        try:
            await self._redis.hset(key, mapping={"created_at_ms": call.created_at_ms,
                                                 "next_seq": call.sequencer.next_seq})
            await self._redis.expire(key, self._ttl_s)
        except (RedisError, OSError) as exc:
            log.warning("call %s: not recorded in Redis (it will not survive a restart): %r",
                        call.call_id, exc)

    def published(self, event: UtteranceEvent) -> None:
        """The broker acknowledged ``event``: the call continues at ``event.seq + 1``."""
        self._submit(event.call_id, {"next_seq": event.seq + 1})

    def timeline(self, call_id: str, t0_ms: int) -> None:
        self._submit(call_id, {"t0_ms": t0_ms})

    def invited(self, call: Call) -> None:
        """``call`` minted one more participant token: its invite limit outlives a restart."""
        self._submit(call.call_id, {"invites_minted": call.invites_minted})

    def ended(self, call_id: str) -> None:
        self._submit(call_id, None)

    def publisher(self, call: Call, publish: Callable[[UtteranceEvent | CallEnded], bool]
                  ) -> Callable[[UtteranceEvent | CallEnded], bool]:
        """``publish`` for ``call``'s sequencer that also records its timeline and its end."""
        saved_t0: list[int] = []

        def forward(event: UtteranceEvent | CallEnded) -> bool:
            if isinstance(event, CallEnded):
                self.ended(call.call_id)
            elif call.t0_ms is not None and not saved_t0:
                saved_t0.append(call.t0_ms)
                self.timeline(call.call_id, call.t0_ms)
            return publish(event)

        return forward

    async def load(self, call_id: str) -> StoredCall | None:
        """The record of ``call_id``, or ``None`` (never created, ended, expired, or no Redis)."""
        try:
            data = await self._redis.hgetall(live_call_key(call_id))
        except (RedisError, OSError) as exc:
            log.warning("call %s: cannot read its record from Redis: %r", call_id, exc)
            return None
        if not data:
            return None
        try:
            fields = {k.decode(): int(v) for k, v in data.items()}
            return StoredCall(call_id, fields["created_at_ms"], fields["next_seq"], fields.get("t0_ms"),
                              fields.get("invites_minted", 0))
        except (KeyError, ValueError, UnicodeDecodeError):
            log.error("call %s: unreadable record %r", call_id, data)
            return None

    async def drain(self, timeout_s: float = 5.0) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout_s)

    def _submit(self, call_id: str, fields: dict[str, int] | None) -> None:
        try:
            self._queue.put_nowait((call_id, fields))
        except asyncio.QueueFull:
            log.error("call %s: record update dropped (%d wait for Redis)", call_id, self._queue.maxsize)
            return
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queue(), name="call-store")

    async def _write_queue(self) -> None:
        while True:
            call_id, fields = await self._queue.get()
            key = live_call_key(call_id)
            try:
                if fields is None:
                    await self._redis.delete(key)
                else:
                    args = [a for kv in fields.items() for a in kv]
                    await self._redis.eval(_SET_IF_LIVE, 1, key, self._ttl_s, *args)
            except (RedisError, OSError) as exc:
                log.warning("call %s: record update %s failed: %r", call_id, fields, exc)
            finally:
                self._queue.task_done()


def new_call(call_id: str, publish: Callable[[UtteranceEvent | CallEnded], bool],
             store: CallStore | None = None, stored: StoredCall | None = None) -> Call:
    """A call with its sequencer; with ``store``, recorded for restarts; with ``stored``,
    the call as it was recorded (restored: same timeline, seqs continue)."""
    sequencer = CallSequencer(call_id, publish, stored.next_seq if stored else 0)
    call = Call(call_id, sequencer)
    if stored is not None:
        call.created_at_ms = stored.created_at_ms
        call.invites_minted = stored.invites_minted
        call.restore_timeline(stored.t0_ms)
    if store is not None:
        sequencer._publish = store.publisher(call, publish)
    return call


def new_call_id() -> str:
    """An unguessable call id (URL-safe)."""
    return "c-" + secrets.token_urlsafe(9)
