"""Broker down: readiness says so, events wait in the backlog and arrive, in order, once
a broker is up; a full backlog refuses loudly."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from aiokafka.structs import ConsumerRecord

from contracts.events import UtteranceEvent
from contracts.signing import SIGNATURE_HEADER, verify
from deploy.services import TansuBroker, free_port
from streamer.metrics import StreamerMetrics
from streamer.publisher import UtterancePublisher
from streamer.settings import StreamerSettings
from tests.factories import call_ended, utterance
from tests.kafka import consume, read_call
from tests.waiting import async_wait_until


def _utterance(seq: int) -> UtteranceEvent:
    return utterance(seq, call_id="c-down")


@pytest.mark.asyncio
async def test_events_survive_a_broker_outage(tmp_path: Path) -> None:
    port = free_port()
    settings = StreamerSettings(broker_bootstrap_servers=f"127.0.0.1:{port}")
    publisher = UtterancePublisher(settings, StreamerMetrics())
    publisher.start()
    events = [_utterance(i) for i in range(3)] + [call_ended("c-down", 2)]
    assert all(publisher.publish(e) for e in events)
    await async_wait_until(lambda: "unreachable" in str(publisher.error), 30,
                           message=lambda: f"no missing broker reported: {publisher.error}")
    assert not publisher.ready and "unreachable" in str(publisher.error)
    with TansuBroker(port, tmp_path / "tansu") as broker:
        assert await publisher.flush(timeout_s=60), publisher.error
        assert publisher.ready and publisher.published == 4
        utterances, ended = await read_call(broker.bootstrap_servers, "c-down", timeout_s=30)
        await publisher.close()
    assert utterances == events[:3] and ended == events[3]


@pytest.mark.asyncio
async def test_full_backlog_refuses_loudly(caplog: pytest.LogCaptureFixture) -> None:
    metrics = StreamerMetrics()
    settings = StreamerSettings(broker_bootstrap_servers=f"127.0.0.1:{free_port()}", publish_backlog=2)
    publisher = UtterancePublisher(settings, metrics)  # not started: nothing drains the backlog
    with caplog.at_level(logging.ERROR):
        accepted = [publisher.publish(_utterance(i)) for i in range(3)]
    assert accepted == [True, True, False]
    assert metrics.publish_dropped._value.get() == 1
    assert "publish backlog full" in caplog.text


@pytest.mark.asyncio
async def test_an_unserializable_record_is_skipped_not_fatal(tansu_broker, caplog) -> None:
    """H1: a lone surrogate in a name made model_dump_json raise and killed the only task."""
    metrics = StreamerMetrics()
    settings = StreamerSettings(broker_bootstrap_servers=tansu_broker.bootstrap_servers)
    publisher = UtterancePublisher(settings, metrics)
    publisher.start()
    bad = utterance(0, call_id="c-bad", speaker_name="x\ud800y")
    good = [utterance(0, call_id="c-bad", utterance_id="c-bad-u0b"), call_ended("c-bad", 0)]
    with caplog.at_level(logging.ERROR):
        assert all(publisher.publish(e) for e in [bad, *good])
        assert await publisher.flush(timeout_s=60), publisher.error
    assert (publisher.failed, publisher.published, publisher.ready) == (1, 2, True)
    assert metrics.publish_failed._value.get() == 1
    assert "utterance c-bad-u0 of call c-bad cannot be published; skipped" in caplog.text
    utterances, ended = await read_call(tansu_broker.bootstrap_servers, "c-bad", timeout_s=30)
    await publisher.close()
    assert utterances == good[:1] and ended == good[1]


@pytest.mark.asyncio
async def test_every_record_is_signed_and_tansu_keeps_the_header(tansu_broker) -> None:
    """With ``event_secret`` each record carries its HMAC; read back with aiokafka, it verifies."""
    settings = StreamerSettings(broker_bootstrap_servers=tansu_broker.bootstrap_servers,
                                event_secret="s3cret-events")
    publisher = UtterancePublisher(settings, StreamerMetrics())
    publisher.start()
    events = [utterance(0, call_id="c-signed"), call_ended("c-signed", 0)]
    assert all(publisher.publish(e) for e in events)
    assert await publisher.flush(timeout_s=60), publisher.error
    await publisher.close()
    records: list[ConsumerRecord] = []

    def collect(batch: list[ConsumerRecord]) -> bool:
        records.extend(r for r in batch if r.key == b"c-signed")
        return len(records) == 2

    assert await consume(tansu_broker.bootstrap_servers, settings.utterances_topic, collect, 30)
    secret = settings.event_key()
    assert secret is not None
    assert [r.value for r in records] == [e.model_dump_json().encode() for e in events]
    assert all(dict(r.headers).keys() == {SIGNATURE_HEADER} for r in records)
    assert all(verify(secret, r.key, r.value, r.headers) for r in records)
    assert not verify(secret, b"c-other", records[0].value, records[0].headers)  # no replay elsewhere
    assert not verify(b"another secret", records[0].key, records[0].value, records[0].headers)
