"""The faust App, and the one documented patch it needs for a low-latency local broker.

faust creates its aiokafka consumer with ``fetch_max_wait_ms=1500`` hard-coded; tansu
sleeps the fetch wait in halves, so every idle fetch would add up to 1.5 s of latency.
:class:`CberlApp` swaps in a transport whose consumer thread lowers that one value
(``WorkerSettings.effective_fetch_max_wait_ms``) on the consumer faust built, before the
consumer starts; everything else is faust's own code path.
"""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TransportT

from workers.settings import WorkerSettings


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this attribute when it builds its Fetcher in start().
        consumer._fetch_max_wait_ms = self.app.fetch_max_wait_ms  # type: ignore[attr-defined]
        # ... and its group coordinator reads this one (faust has no setting for it).
        consumer._group_instance_id = self.app.group_instance_id  # type: ignore[attr-defined]
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class CberlApp(faust.App):
    """A faust App whose Kafka consumer waits at most ``fetch_max_wait_ms`` per fetch."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int, group_instance_id: str | None = None,
                 **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.group_instance_id = group_instance_id
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self)


def create_app(settings: WorkerSettings) -> CberlApp:
    """The App of a worker (agents are registered by :mod:`workers.agents`)."""
    return CberlApp(settings.app_id, fetch_max_wait_ms=settings.effective_fetch_max_wait_ms,
                    group_instance_id=settings.group_instance_id, **settings.faust_settings())
