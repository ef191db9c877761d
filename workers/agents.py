"""The labelling agent: micro-batches of ``utterances`` in, Emotion events out.

The agent is thin: it hands each ``stream.take_events`` batch to the
:class:`~workers.processor.BatchProcessor` and lets faust ack the records only after the
batch was published and saved. It runs at ``concurrency=1`` per worker: faust keeps a
partition's records in order only within one agent instance.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence

import faust
from aiokafka.errors import IllegalStateError
from faust.types import EventT
from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt, wait_exponential

from workers.dead_letter import DeadLetter, Incoming
from workers.metrics import WorkerMetrics
from workers.processor import BatchProcessor
from workers.settings import WorkerSettings
from workers.state import Emitted

log = logging.getLogger(__name__)


PUBLISH_ATTEMPTS = 5
"""Sends of one micro-batch's records before its failure counts as a processing error."""


class TopicSink:
    """Publishes Emotion events and dead letters to their faust topics, keyed by call.

    A record the broker refuses is sent again, with back-off (0.25 s doubling to 2 s), up to
    :data:`PUBLISH_ATTEMPTS` times: a just-restarted tansu answers the first produce
    requests with ``UnknownError``, and a transient refusal must not dead-letter a batch of
    valid utterances. Only the refused records are sent again.
    """

    def __init__(self, emotions: faust.TopicT, dead_letters: faust.TopicT) -> None:
        self.emotions = emotions
        self.dead_letters = dead_letters

    async def publish(self, events: Sequence[Emitted]) -> None:
        await _send_all(self.emotions, [(e.call_id.encode(), e.value) for e in events])

    async def dead_letter(self, letters: Sequence[tuple[Incoming, DeadLetter]]) -> None:
        await _send_all(self.dead_letters, [(record.key, letter.model_dump_json().encode())
                                            for record, letter in letters])


async def _send_all(topic: faust.TopicT, records: list[tuple[bytes | None, bytes]]) -> None:
    """Send ``records`` and wait for every acknowledgement; raises the last refusal."""
    remaining = list(records)
    async for attempt in AsyncRetrying(stop=stop_after_attempt(PUBLISH_ATTEMPTS),
                                       wait=wait_exponential(multiplier=0.25, max=2.0),
                                       before_sleep=_log_resend, reraise=True):
        with attempt:
            await _send_once(topic, remaining)


async def _send_once(topic: faust.TopicT, remaining: list[tuple[bytes | None, bytes]]) -> None:
    """One round: ``remaining`` is left holding the refused records (raises if any)."""
    pending: list[Awaitable[object]] = [await topic.send(key=key, value=value)
                                        for key, value in remaining]
    results = await asyncio.gather(*pending, return_exceptions=True)
    refused = [(record, result) for record, result in zip(remaining, results, strict=True)
               if isinstance(result, BaseException)]
    remaining[:] = [record for record, _ in refused]
    if refused:
        error = refused[-1][1]
        raise error if isinstance(error, Exception) else RuntimeError(repr(error))


def _log_resend(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning("the broker refused records (%s: %s); sending them again (attempt %d of %d)",
                type(error).__name__, error, state.attempt_number + 1, PUBLISH_ATTEMPTS)


def register_agents(app: faust.App, settings: WorkerSettings, processor: BatchProcessor,
                    metrics: WorkerMetrics) -> None:
    """Add the labelling agent, the consumer-lag timer and the assignment gauge to ``app``."""
    utterances = app.topic(settings.utterances_topic, key_serializer="raw", value_serializer="raw")

    @app.agent(utterances, name="label_utterances", concurrency=1)
    async def label_utterances(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.max_batch, within=settings.batch_within_s):
            await _finish(processor, [_incoming(e) for e in events])

    @app.on_partitions_assigned.connect
    async def on_partitions_assigned(sender: faust.App, assigned: set, **kwargs: object) -> None:
        metrics.set_assignment(tp.partition for tp in assigned if tp.topic == settings.utterances_topic)

    @app.timer(interval=5.0, name="consumer_lag")
    async def consumer_lag() -> None:
        for tp in app.consumer.assignment():
            try:
                position = await app.consumer.position(tp)
            except IllegalStateError:  # revoked by a rebalance since assignment() was read
                continue
            highwater = app.consumer.highwater(tp)
            if position is not None and highwater is not None:
                metrics.consumer_lag.labels(partition=f"{tp.topic}:{tp.partition}").set(highwater - position)


async def _finish(processor: BatchProcessor, batch: list[Incoming]) -> None:
    """Process the batch to the end even if the worker is told to stop meanwhile.

    faust acks a ``take_events`` batch when the agent leaves it, cancelled or not; finishing
    first means a stopping worker never commits records it did not process. SIGKILL is
    always safe: nothing is committed, and the next owner redoes the batch.
    """
    task = asyncio.ensure_future(_guarded(processor, batch))
    stopping = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not stopping:
                log.warning("stop requested: finishing the current micro-batch (%d records) first",
                            len(batch))
            stopping = True
    if stopping:
        raise asyncio.CancelledError


async def _guarded(processor: BatchProcessor, batch: list[Incoming]) -> None:
    """An unexpected error dead-letters the batch (with the error) rather than kill the agent.

    Dead letters are bounded (:meth:`DeadLetter.of`), so sending them fits the producer's
    limits; should that still fail, the failure is logged and the agent goes on.
    """
    try:
        await processor.process(batch)
    except Exception as exc:
        log.exception("micro-batch of %d records failed; dead-lettering it", len(batch))
        letters = [(r, DeadLetter.of(r, "processing_error", f"{type(exc).__name__}: {exc}")) for r in batch]
        processor.metrics.dead_lettered.labels(reason="processing_error").inc(len(letters))
        try:
            await processor.sink.dead_letter(letters)
        except Exception:
            log.exception("could not dead-letter the failed micro-batch of %d records (offsets "
                          "%s); they are skipped", len(batch), [(r.partition, r.offset) for r in batch])


def _incoming(event: EventT) -> Incoming:
    message = event.message
    value = event.value if isinstance(event.value, bytes) else bytes(event.value or b"")
    key = event.key if isinstance(event.key, bytes) or event.key is None else str(event.key).encode()
    return Incoming(value=value, key=key, topic=message.topic, partition=message.partition,
                    offset=message.offset, headers=_headers(message.headers))


def _headers(headers: object) -> tuple[tuple[str, bytes], ...]:
    """faust's message headers (a list of pairs or a mapping) as ``(name, bytes)`` pairs."""
    pairs = headers.items() if isinstance(headers, dict) else (headers or ())
    out = []
    for name, value in pairs:  # type: ignore[union-attr]
        name = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
        out.append((name, bytes(value) if isinstance(value, bytes | bytearray) else str(value).encode()))
    return tuple(out)
