"""Broker down: readiness says so, events wait in the backlog and arrive, in order, once
a broker is up; a full backlog refuses loudly."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from contracts.events import UtteranceEvent
from deploy.services import TansuBroker, free_port
from streamer.metrics import StreamerMetrics
from streamer.publisher import UtterancePublisher
from streamer.settings import StreamerSettings
from tests.factories import call_ended, utterance
from tests.kafka import read_call
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
