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
from faust.types import EventT

from workers.dead_letter import DeadLetter, Incoming
from workers.metrics import WorkerMetrics
from workers.processor import BatchProcessor
from workers.settings import WorkerSettings
from workers.state import Emitted

log = logging.getLogger(__name__)


class TopicSink:
    """Publishes Emotion events and dead letters to their faust topics, keyed by call."""

    def __init__(self, emotions: faust.TopicT, dead_letters: faust.TopicT) -> None:
        self.emotions = emotions
        self.dead_letters = dead_letters

    async def publish(self, events: Sequence[Emitted]) -> None:
        pending = [await self.emotions.send(key=e.call_id.encode(), value=e.value) for e in events]
        await _delivered(pending)

    async def dead_letter(self, letters: Sequence[tuple[Incoming, DeadLetter]]) -> None:
        pending = [await self.dead_letters.send(key=record.key, value=letter.model_dump_json().encode())
                   for record, letter in letters]
        await _delivered(pending)


async def _delivered(pending: list[Awaitable[object]]) -> None:
    if pending:
        await asyncio.gather(*pending)


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
            position = await app.consumer.position(tp)
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
