"""Call records in a real redis-server: round trip, TTL, capped streams, outage retries."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis

from cberl_model.inference import CallState, NodeState
from contracts.call_stream import call_stream_key
from contracts.events import EmotionEvent
from deploy.services import RedisServer, free_port
from tests.factories import emotion
from tests.waiting import async_wait_until
from workers.metrics import WorkerMetrics
from workers.state import CallRecord, CallStore, call_key


def record() -> CallRecord:
    node = NodeState("u0", 0, "alice", {"text": np.arange(4, dtype=np.float32)}, revision=1)
    return CallRecord(state=CallState("c1", next_seq=1, nodes=[node]), next_seq=3, seqs={"u0": 2},
                      pending={5: "{}"}, waiting_since_ms=12, skipped=[1], end_seq=None)


def test_record_round_trip_and_corrupt_input() -> None:
    again = CallRecord.from_json(record().to_json())
    assert again.to_json() == record().to_json()
    np.testing.assert_array_equal(again.state.nodes[0].features["text"], np.arange(4))
    with pytest.raises(ValueError, match="invalid call record"):
        CallRecord.from_json('{"version": 1}')
    with pytest.raises(ValueError, match="record version"):
        CallRecord.from_json('{"version": 99}')


def store(url: str, metrics: WorkerMetrics | None = None, maxlen: int = 10) -> CallStore:
    return CallStore(aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1), ttl_s=100,
                     stream_maxlen=maxlen, retry_max_s=0.2, metrics=metrics or WorkerMetrics())


def test_store_saves_with_ttl_and_reports_unreadable_state(redis_server: RedisServer) -> None:
    async def run() -> None:
        s = store(redis_server.url)
        await s.save([("c1", record())])
        loaded = await s.load(["c1", "nobody"])
        assert loaded["nobody"] is None and loaded["c1"] is not None
        assert loaded["c1"].to_json() == record().to_json()
        assert 0 < await s.client.ttl(call_key("c1")) <= 100
        await s.client.set(call_key("bad"), "not json")
        assert (await s.load(["bad"]))["bad"] is None
        assert s.metrics.registry.get_sample_value("cberl_worker_state_lost_total") == 1
        await s.client.aclose()

    asyncio.run(run())


def test_emotion_stream_is_capped_and_expires(redis_server: RedisServer) -> None:
    async def run() -> None:
        s = store(redis_server.url, maxlen=10)
        for chunk in range(10):
            await s.append_emotions([emotion(chunk * 100 + i, call_id="cap") for i in range(100)])
        key = call_stream_key("cap")
        length = await s.client.xlen(key)
        assert 10 <= length < 300, length  # MAXLEN ~ trims whole macro nodes
        last = await s.client.xrevrange(key, count=1)
        assert EmotionEvent.model_validate_json(last[0][1][b"event"]).seq == 999
        assert 0 < await s.client.ttl(key) <= 100
        await s.client.aclose()

    asyncio.run(run())


def test_store_waits_out_a_redis_outage(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = RedisServer(free_port(), tmp_path)
    server.start()
    metrics = WorkerMetrics()

    def errors() -> float:
        return metrics.registry.get_sample_value("cberl_worker_redis_errors_total") or 0.0

    async def run() -> None:
        s = store(server.url, metrics)
        await s.save([("c1", record())])
        server.stop()
        saving = asyncio.ensure_future(s.save([("c2", record())]))
        await async_wait_until(lambda: errors() >= 2, 10, message="the save never retried")
        assert not saving.done(), "a save during an outage must wait, not fail"
        await asyncio.to_thread(server.start)
        await asyncio.wait_for(saving, 10)
        loaded = await s.load(["c1", "c2"])
        assert all(v is not None for v in loaded.values()), "persistent Redis keeps the records"
        await s.client.aclose()

    try:
        with caplog.at_level(logging.WARNING, logger="workers.state"):
            asyncio.run(run())
    finally:
        server.stop()
    assert metrics.registry.get_sample_value("cberl_worker_redis_errors_total") >= 1
    assert "redis unavailable during save" in caplog.text and "redis is back" in caplog.text
