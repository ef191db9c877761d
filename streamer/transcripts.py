"""Transcript fan-out: each published utterance, without its features, onto the call's
Redis stream, so subscribers (the web page, SSE/WebSocket clients) see who said what next
to the emotion events the workers add to the same stream.

Writes happen after the broker acknowledged the utterance (so the transcript never shows
an utterance the workers will not label), off the publishing path: a slow or dead Redis
delays no publishing; a failed write is logged and retried a few times, then dropped with
an ERROR line (the utterance itself is safe on the topic).
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from contracts.call_stream import TRANSCRIPT_FIELD, call_stream_key
from contracts.events import TranscriptEntry, UtteranceEvent

log = logging.getLogger(__name__)

_ATTEMPTS = 4  # waits of 0.5, 1 and 2 s between them
_BACKLOG = 10_000  # transcripts waiting for Redis; beyond it new ones are dropped with an ERROR line


class TranscriptWriter:
    """XADDs :class:`~contracts.events.TranscriptEntry` values to per-call streams, in order.

    One background task writes the queue front to back: concurrent writes could land on a
    call's stream out of order (the pool hands each its own connection), and readers show
    the stream as it is. A dead Redis therefore holds the queue for one retry cycle per
    entry; the bounded backlog keeps that from growing memory without end.
    """

    def __init__(self, redis: aioredis.Redis, maxlen: int, ttl_s: int, backlog: int = _BACKLOG) -> None:
        self._redis = redis
        self._maxlen = maxlen
        self._ttl_s = ttl_s
        self._queue: asyncio.Queue[TranscriptEntry] = asyncio.Queue(backlog)
        self._writer: asyncio.Task[None] | None = None

    def submit(self, event: UtteranceEvent) -> None:
        """Queue ``event``'s transcript; the writer task (started on first use) writes it."""
        try:
            self._queue.put_nowait(TranscriptEntry.of(event))
        except asyncio.QueueFull:
            log.error("transcript of utterance %s (call %s) dropped: %d transcripts already wait for Redis",
                      event.utterance_id, event.call_id, self._queue.maxsize)
            return
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queue(), name="transcripts")

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait (bounded) for the queued writes, then stop the writer, e.g. before shutting down."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        except TimeoutError:
            log.warning("%d transcripts not written before shutdown", self._queue.qsize())
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None

    async def _write_queue(self) -> None:
        while True:
            entry = await self._queue.get()
            try:
                await self._write(entry)
            finally:
                self._queue.task_done()

    async def _write(self, entry: TranscriptEntry) -> None:
        key = call_stream_key(entry.call_id)

        def note(state: RetryCallState) -> None:
            assert state.outcome is not None
            log.warning("transcript of %s not written (attempt %d/%d): %r", entry.utterance_id,
                        state.attempt_number, _ATTEMPTS, state.outcome.exception())

        retrying = AsyncRetrying(retry=retry_if_exception_type((RedisError, OSError)),
                                 stop=stop_after_attempt(_ATTEMPTS), wait=wait_exponential(0.5),
                                 before_sleep=note, reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        pipe.xadd(key, {TRANSCRIPT_FIELD: entry.model_dump_json()},
                                  maxlen=self._maxlen, approximate=True)
                        pipe.expire(key, self._ttl_s)
                        await pipe.execute()
        except (RedisError, OSError) as exc:
            log.error("transcript of utterance %s (call %s) dropped after %d attempts, Redis unreachable: %r",
                      entry.utterance_id, entry.call_id, _ATTEMPTS, exc)
