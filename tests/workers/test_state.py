"""Call records in a real redis-server: round trip, TTL, capped streams, outage retries."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis

from cberl_model.inference import CallState, NodeState
from contracts.call_stream import call_key, call_stream_key
from contracts.events import EmotionEvent
from deploy.services import RedisServer, free_port
from tests.factories import emotion, utterance
from tests.waiting import async_wait_until
from workers.messages import Utterance
from workers.metrics import WorkerMetrics
from workers.state import CallRecord, CallStore, Emitted, legacy_key, state_key


def record() -> CallRecord:
    node = NodeState("u0", 2, "alice", {"text": np.arange(4, dtype=np.float32)}, revision=1)
    held = Utterance.of(utterance(5, call_id="c1", features={"text": [0.5, -1.0, 2.0]}, produced_at=1))
    return CallRecord(state=CallState("c1", next_seq=3, nodes=[node]), next_seq=3,
                      pending={5: held}, waiting_since_ms=12, skipped=[(1, 2)], end_seq=None)


def test_record_round_trip_and_corrupt_input() -> None:
    raw = record().to_bytes()
    again = CallRecord.from_bytes(raw)
    assert again.to_bytes() == raw
    np.testing.assert_array_equal(again.state.nodes[0].features["text"], np.arange(4))
    np.testing.assert_array_equal(again.pending[5].vectors["text"], [0.5, -1.0, 2.0])
    assert again.pending[5].event == record().pending[5].event
    with pytest.raises(ValueError, match="invalid call record"):
        CallRecord.from_bytes(b'{"version": 1}')
    with pytest.raises(ValueError, match="record version 99"):
        CallRecord.from_bytes(b'{"version": 99}')
    with pytest.raises(ValueError, match="invalid call record: layout version 7"):
        CallRecord.from_bytes(raw[:4] + bytes([7]) + raw[5:])
    for damaged in (b"", b"CBRC", b"PNG\x89 not a record", raw[:-3], raw[:40], raw + b"\0\0\0\0",
                    raw.replace(b"CBST", b"XXXX")):
        with pytest.raises(ValueError, match="invalid call"):
            CallRecord.from_bytes(damaged)


def test_binary_state_is_compact_and_exact() -> None:
    rng = np.random.default_rng(0)
    nodes = [NodeState(f"call-42-utt-{i}", 1000 + i, f"speaker-{i % 2}",
                       {"text": rng.standard_normal(384).astype(np.float32)}, revision=2, final=True)
             for i in range(12)]
    state = CallState("call-42", next_seq=1012, nodes=nodes)
    raw = state.to_bytes()
    again = CallState.from_bytes(raw)
    assert again.to_dict() == state.to_dict()
    as_json = len(json.dumps(state.to_dict()))
    assert len(raw) < 12 * (384 * 4 + 100) < as_json, (len(raw), as_json)
    with pytest.raises(ValueError, match="invalid call state"):
        CallState.from_bytes(raw[:-1])
    with pytest.raises(ValueError, match="invalid call state"):
        CallState.from_bytes(b"GIF89a" + raw)


def test_old_json_record_is_read_and_its_seqs_table_wins() -> None:
    """A version-1 record: node seqs come from its ``seqs`` table, held events are parsed."""
    node = NodeState("u0", 0, "alice", {"text": np.arange(4, dtype=np.float32)}, revision=1)
    held = utterance(5, call_id="c1")
    old = json.dumps({
        "version": 1, "state": CallState("c1", next_seq=1, nodes=[node]).to_dict(), "next_seq": 6,
        "seqs": {"u0": 4}, "pending": {"5": held.model_dump_json()}, "waiting_since_ms": 12,
        "skipped": [1, 2, 3, 5], "end_seq": None})
    loaded = CallRecord.from_bytes(old.encode())
    assert [n.seq for n in loaded.state.nodes] == [4]
    assert loaded.pending[5].event.utterance_id == held.utterance_id
    assert loaded.skipped == [(1, 4), (5, 6)]
    assert CallRecord.from_bytes(loaded.to_bytes()).state.nodes[0].seq == 4
    assert not hasattr(loaded, "seqs")


def store(url: str, metrics: WorkerMetrics | None = None, maxlen: int = 10) -> CallStore:
    return CallStore(aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=1), ttl_s=100,
                     stream_maxlen=maxlen, retry_max_s=0.2, metrics=metrics or WorkerMetrics())


def test_store_saves_with_ttl_and_reports_unreadable_state(redis_server: RedisServer) -> None:
    async def run() -> None:
        s = store(redis_server.url)
        await s.save([("c1", record())])
        loaded = await s.load(["c1", "nobody"])
        assert loaded["nobody"] is None and loaded["c1"] is not None
        assert loaded["c1"].to_bytes() == record().to_bytes()
        assert 0 < await s.client.ttl(state_key("c1")) <= 100
        await s.client.set(state_key("bad"), "not a record")
        assert (await s.load(["bad"]))["bad"] is None
        assert s.metrics.registry.get_sample_value("cberl_worker_state_lost_total") == 1
        # the streamer's call marker is not a record; a pre-binary JSON record there is
        await s.client.set(call_key("marked"), "1")
        assert (await s.load(["marked"]))["marked"] is None
        old = {"version": 1, "state": record().state.to_dict(), "next_seq": 3, "seqs": {"u0": 2},
               "pending": {}, "waiting_since_ms": None, "skipped": [], "end_seq": None}
        await s.client.set(legacy_key("old"), json.dumps(old))
        upgraded = (await s.load(["old"]))["old"]
        assert upgraded is not None and upgraded.state.nodes[0].seq == 2
        assert s.metrics.registry.get_sample_value("cberl_worker_state_lost_total") == 1
        assert await s.known(["marked", "old", "nobody"]) == {"marked", "old"}
        await s.client.aclose()

    asyncio.run(run())


def test_emotion_stream_is_capped_and_expires(redis_server: RedisServer) -> None:
    async def run() -> None:
        s = store(redis_server.url, maxlen=10)
        for chunk in range(10):
            events = [emotion(chunk * 100 + i, call_id="cap") for i in range(100)]
            await s.append_emotions([Emitted("cap", e.model_dump_json().encode()) for e in events])
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
