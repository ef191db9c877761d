"""Kafka from the tests' side: :func:`produce` records, read a topic back from the beginning.

One consumer loop (:func:`consume`) serves both readers: :func:`read_topic` (raw values
until a condition holds) and :func:`read_call` (one call's Utterance events up to its
CallEnded).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from contracts.events import CallEnded, UtteranceEvent, parse_utterances_message
from contracts.topics import UTTERANCES_TOPIC


async def produce(bootstrap: str, topic: str, records: Iterable[tuple[str, bytes]]) -> None:
    """Send ``(key, value)`` records in order (one at a time: tansu needs batch size 1)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=16384, linger_ms=0)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value=value, key=key.encode())
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, on_records: Callable[[list[ConsumerRecord]], bool],
                  timeout_s: float) -> bool:
    """Hand ``topic``'s records, from the beginning, batch by batch to ``on_records`` until it
    returns True (then True) or ``timeout_s`` has passed (then False)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, fetch_max_wait_ms=50)
    await consumer.start()
    deadline = time.monotonic() + timeout_s
    try:
        if on_records([]):
            return True
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                if on_records(records):
                    return True
        return False
    finally:
        await consumer.stop()


async def read_topic(bootstrap: str, topic: str, done: Callable[[list[bytes]], bool],
                     timeout_s: float) -> list[bytes]:
    """Values of ``topic`` from the beginning until ``done(values)`` or the timeout."""
    values: list[bytes] = []

    def on_records(records: list[ConsumerRecord]) -> bool:
        values.extend(r.value for r in records)
        return done(values)

    await consume(bootstrap, topic, on_records, timeout_s)
    return values


async def read_call(bootstrap: str, call_id: str, timeout_s: float = 60.0, topic: str = UTTERANCES_TOPIC
                    ) -> tuple[list[UtteranceEvent], CallEnded | None]:
    """Every utterance of ``call_id`` on ``topic``, up to its CallEnded (None: the timeout came first)."""
    utterances: list[UtteranceEvent] = []
    ended: list[CallEnded] = []

    def on_records(records: list[ConsumerRecord]) -> bool:
        for record in records:
            if record.key != call_id.encode():
                continue
            event = parse_utterances_message(record.value)
            if isinstance(event, CallEnded):
                ended.append(event)
                return True
            utterances.append(event)
        return False

    await consume(bootstrap, topic, on_records, timeout_s)
    return utterances, (ended[0] if ended else None)
