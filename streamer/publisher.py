"""Publish stage: events onto the ``utterances`` topic (key ``call_id``), in order, acked.

One task drains a bounded in-memory backlog and sends one record at a time with
``acks=all``, waiting for each ack before the next: per-call order is preserved, every
batch holds exactly one record (tansu 0.6 reports wrong offsets for multi-record batches,
DESIGN.md), and a failed send is retried -- the same record, with capped back-off --
until the broker takes it.

When the broker is down: ``/readyz`` turns 503 with the reason, events queue in the
backlog (``publish_backlog`` events, default 10,000: hours of speech for a few calls), and
are sent in order once the broker is back. If the backlog fills, new events are refused
with an ERROR log line and ``streamer_publish_dropped_total`` counts them; nothing is lost
without a trace. The backlog is memory only: it does not survive a crash of the process.

A record that cannot be sent at all (it does not serialize, or the client refuses it) is
logged with its ids, counted in ``streamer_publish_failed_total`` and skipped: one bad
record never stops the records behind it. Should the sender task end anyway, ``ready``
turns false with the reason, so ``/readyz`` says the gateway cannot publish.

With ``CBERL_EVENT_SECRET`` set, every record (utterances and call ends) carries an
HMAC-SHA256 of its key and value in the :data:`~contracts.signing.SIGNATURE_HEADER`
header (:mod:`contracts.signing`); the workers verify it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from contracts.clock import now_ms
from contracts.events import CallEnded, UtteranceEvent
from contracts.signing import signature_headers
from contracts.topics import ensure_topics
from streamer.metrics import StreamerMetrics
from streamer.settings import StreamerSettings

log = logging.getLogger(__name__)

_BACKOFF = wait_exponential(multiplier=0.2, max=5.0)
"""Waits of 0.2, 0.4, 0.8 ... s, capped at 5 s: quick on a blip, quiet in an outage."""


class UtterancePublisher:
    """The gateway's one Kafka producer and its backlog."""

    def __init__(self, settings: StreamerSettings, metrics: StreamerMetrics,
                 on_published: Callable[[UtteranceEvent], None] | None = None) -> None:
        self._settings = settings
        self._metrics = metrics
        self._on_published = on_published
        self._queue: asyncio.Queue[UtteranceEvent | CallEnded] = asyncio.Queue(settings.publish_backlog)
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self.error: str | None = "not connected yet"
        self.published = 0
        self.failed = 0

    @property
    def ready(self) -> bool:
        """Connected, the sender task running, and the last send (if any) succeeded."""
        return self.error is None and self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the sender task (it connects, and reconnects, by itself)."""
        self._task = asyncio.create_task(self._run(), name="utterance-publisher")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """The sender task is gone: nothing can be published any more; say why."""
        if task.cancelled():
            self.error = "the publisher is closed"
            return
        exc = task.exception()
        self.error = f"the publisher task ended: {exc!r}"
        log.error("%s; no more events reach %s", self.error, self._settings.utterances_topic,
                  exc_info=exc)

    def publish(self, event: UtteranceEvent | CallEnded) -> bool:
        """Queue ``event`` for the broker; ``False`` (and an ERROR log) if the backlog is full."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._metrics.publish_dropped.inc()
            log.error("publish backlog full (%d events, broker: %s): dropped %s of call %s",
                      self._queue.maxsize, self.error, event.type, event.call_id)
            return False
        self._metrics.publish_backlog.set(self._queue.qsize())
        return True

    async def flush(self, timeout_s: float) -> bool:
        """Wait until the backlog is sent; ``False`` if it is not within ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout_s)
            return True
        return False

    async def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (bounded by ``timeout_s``), then stop."""
        if not await self.flush(timeout_s):
            log.error("closing with %d unsent events (broker: %s)", self._queue.qsize(), self.error)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._producer is not None:
            await self._producer.stop()

    def _new_producer(self) -> AIOKafkaProducer:
        extra = {"linger_ms": 0} if self._settings.broker_profile == "tansu" else {}
        return AIOKafkaProducer(bootstrap_servers=self._settings.broker_bootstrap_servers, acks="all",
                                enable_idempotence=False, request_timeout_ms=10_000, **extra,
                                **self._settings.kafka_security())

    def _retrying(self, problem: str, errors: tuple[type[BaseException], ...]) -> AsyncRetrying:
        """Retry forever on ``errors`` with :data:`_BACKOFF`; :attr:`error` says ``problem``."""

        def note(state: RetryCallState) -> None:
            assert state.outcome is not None and state.next_action is not None
            self.error = f"{problem}: {state.outcome.exception()!r}"
            log.warning("%s (retrying in %.1f s)", self.error, state.next_action.sleep)

        return AsyncRetrying(retry=retry_if_exception_type(errors), wait=_BACKOFF, before_sleep=note)

    async def _connect(self) -> None:
        """Create the topic if needed and start the producer, retrying with back-off."""
        servers = self._settings.broker_bootstrap_servers
        topics = self._settings.topic_partitions()
        async for attempt in self._retrying(f"broker {servers} unreachable",
                                            (KafkaError, OSError, RuntimeError)):
            with attempt:
                producer = self._new_producer()
                try:
                    await ensure_topics(servers, topics, timeout_s=10.0,
                                        **self._settings.kafka_security())
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
        self._producer = producer
        self.error = None
        log.info("publishing to %s on %s", self._settings.utterances_topic, servers)

    async def _run(self) -> None:
        await self._connect()
        assert self._producer is not None
        while True:
            event = await self._queue.get()
            try:
                await self._send(self._producer, event)
            except Exception:  # one unsendable record must not stop the records behind it
                self.failed += 1
                self._metrics.publish_failed.inc()
                log.exception("%s %s of call %s cannot be published; skipped",
                              event.type, getattr(event, "utterance_id", ""), event.call_id)
            finally:
                self._queue.task_done()
                self._metrics.publish_backlog.set(self._queue.qsize())

    async def _send(self, producer: AIOKafkaProducer, event: UtteranceEvent | CallEnded) -> None:
        """Send one record until it is acked (same record, capped back-off), signed if configured."""
        value = event.model_dump_json().encode()
        key = event.call_id.encode()
        headers = signature_headers(self._settings.event_key(), key, value)
        problem = f"send to {self._settings.broker_bootstrap_servers} failed"
        async for attempt in self._retrying(problem, (KafkaError,)):
            with attempt:
                await producer.send_and_wait(self._settings.utterances_topic, value=value,
                                             key=key, headers=headers)
        self.error = None
        self.published += 1
        if isinstance(event, UtteranceEvent):
            if event.end_of_speech_at is not None:
                self._metrics.utterance_latency.observe((now_ms() - event.end_of_speech_at) / 1000)
            if self._on_published is not None:
                self._on_published(event)
