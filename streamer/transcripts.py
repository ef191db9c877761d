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

from workers.events import CALL_STREAM_TRANSCRIPT_FIELD, TranscriptEntry, UtteranceEvent, emotion_stream_key

log = logging.getLogger(__name__)

_ATTEMPTS = 4
_BACKOFF_S = 0.5


class TranscriptWriter:
    """XADDs :class:`~workers.events.TranscriptEntry` values to per-call streams."""

    def __init__(self, redis: aioredis.Redis, maxlen: int, ttl_s: int) -> None:
        self._redis = redis
        self._maxlen = maxlen
        self._ttl_s = ttl_s
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, event: UtteranceEvent) -> None:
        """Write ``event``'s transcript in the background."""
        task = asyncio.create_task(self._write(TranscriptEntry.of(event)),
                                   name=f"transcript:{event.utterance_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait (bounded) for the writes in flight, e.g. before shutting down."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    async def _write(self, entry: TranscriptEntry) -> None:
        key = emotion_stream_key(entry.call_id)
        for attempt in range(_ATTEMPTS):
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.xadd(key, {CALL_STREAM_TRANSCRIPT_FIELD: entry.model_dump_json()},
                              maxlen=self._maxlen, approximate=True)
                    pipe.expire(key, self._ttl_s)
                    await pipe.execute()
                return
            except (RedisError, OSError) as exc:
                log.warning("transcript of %s not written (attempt %d/%d): %r",
                            entry.utterance_id, attempt + 1, _ATTEMPTS, exc)
                await asyncio.sleep(_BACKOFF_S * 2**attempt)
        log.error("transcript of utterance %s (call %s) dropped: Redis unreachable",
                  entry.utterance_id, entry.call_id)
