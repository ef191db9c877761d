"""Admission control: the rule on fake load, then the real gateway driven past capacity."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from deploy.services import RedisServer, TansuBroker
from deploy.speech import timeline_wav, word_error_rate
from streamer.analyzer import SegmentAnalyzer
from streamer.asr import Transcriber
from streamer.capacity import Capacity
from streamer.frames import Transcript
from streamer.join import join_call
from streamer.limits import LimitError
from streamer.metrics import StreamerMetrics
from streamer.settings import StreamerSettings
from tests.kafka import read_call
from tests.streamer.conftest import gateway_settings, run_gateway
from tests.waiting import async_wait_until


class FakeLoad:
    def __init__(self) -> None:
        self.backlog_s = 0.0
        self.busy_s = 0.0
        self.active_streams = 0
        self.degraded = False


def test_backlog_refuses_with_503_retry_after_and_a_reason() -> None:
    load = FakeLoad()
    metrics = StreamerMetrics()
    capacity = Capacity(load, StreamerSettings(capacity_max_backlog_s=3.0, capacity_retry_after_s=7), metrics)
    capacity.admit(2)
    assert capacity.check() == "ok"
    load.backlog_s = 4.5
    with pytest.raises(LimitError) as refused:
        capacity.admit(1)
    assert refused.value.status == 503 and refused.value.retry_after_s == 7
    assert "ASR backlog 4.5 s" in str(refused.value) and "capacity" in str(refused.value)
    assert "backlog" in capacity.check()
    assert metrics.admission_refused.labels(reason="backlog")._value.get() == 1  # noqa: SLF001
    load.backlog_s = 0.5
    capacity.admit(1)


def test_seat_budget_counts_reserved_seats_and_lets_seated_joins_in(monkeypatch) -> None:
    monkeypatch.setattr("streamer.capacity.usable_cores", lambda: 2)
    in_use = [0]
    capacity = Capacity(FakeLoad(), StreamerSettings(capacity_participants_per_core=4.0),
                        seats=lambda: in_use[0])
    assert capacity.max_seats == 8
    capacity.admit(2)
    in_use[0] = 7                          # e.g. three two-party calls and one extra guest
    with pytest.raises(LimitError) as refused:
        capacity.admit(2)                  # a new two-party call: 9 > 8
    assert refused.value.status == 503 and "7 participant seats in use + 2 > 8" in str(refused.value)
    capacity.admit(1)                      # one more guest still fits: 8
    in_use[0] = 8
    capacity.admit(1, seated=True)         # a participant taking the seat its call reserved
    with pytest.raises(LimitError, match="seats"):
        capacity.admit(1)
    assert capacity.check() == "ok"        # full of seats is not unready: existing calls go on
    assert Capacity(FakeLoad(), StreamerSettings(capacity_participants_per_core=0),
                    seats=lambda: 10**6).admit(5) is None   # 0: no seat budget


@pytest.mark.asyncio
async def test_projected_utilization_and_sustained_loop_lag_refuse() -> None:
    load = FakeLoad()
    capacity = Capacity(load, StreamerSettings(capacity_max_asr_utilization=0.7,
                                               capacity_max_loop_lag_ms=150))
    capacity.start()
    try:
        load.active_streams = 4
        for _ in range(6):          # the ASR thread busy 50 % of the time
            load.busy_s += 0.05
            await asyncio.sleep(0.1)
        assert 0.3 < capacity.utilization() < 0.8
        capacity.admit(1)                                  # 4 -> 5 streams: ~62 %
        with pytest.raises(LimitError, match="utilization"):
            capacity.admit(4)                              # 4 -> 8 streams: ~100 %
        loop = asyncio.get_running_loop()
        end = loop.time() + 3.2
        while loop.time() < end:                           # a loop blocked 0.3 s at a time
            await asyncio.sleep(0)
            time.sleep(0.3)  # noqa: ASYNC251 -- the point: a blocked loop
        assert capacity.loop_lag_s() > 0.15
        assert "event-loop lag" in (capacity.reason(0) or "")
    finally:
        await capacity.stop()


class SlowTranscriber(Transcriber):
    """The real model, made slow (a loaded ASR): each Whisper call takes ``delay_s`` more."""

    def __init__(self, real: Transcriber, delay_s: float) -> None:  # noqa: D107 -- borrows real's state
        self.__dict__.update(real.__dict__)
        self.delay_s = delay_s

    def transcribe_batch(self, audios: Sequence[np.ndarray],
                         window_s: float | None = None) -> list[Transcript]:
        time.sleep(self.delay_s)
        return super().transcribe_batch(audios, window_s)


ALICE = [(0.5, "Can you send me the report before the meeting tomorrow?"),
         (6.5, "I am really happy that you called me this morning.")]
BOB = [(3.6, "Do you want to have dinner with us tonight?"),
       (9.5, "Thank you for helping me with my homework.")]


@pytest.mark.asyncio
async def test_past_capacity_new_calls_get_503_admitted_calls_lose_nothing_and_it_recovers(
        tansu_broker: TansuBroker, redis_server: RedisServer, analyzer: SegmentAnalyzer,
        tmp_path: Path) -> None:
    slow = SegmentAnalyzer(SlowTranscriber(analyzer._transcriber, 3.0), analyzer._featurizers,  # noqa: SLF001
                           max_batch=1, degrade_backlog_s=2.0)
    settings = gateway_settings(tansu_broker, redis_server, capacity_max_backlog_s=2.0,
                                capacity_retry_after_s=5)
    spoken = {"alice": timeline_wav(tmp_path / "alice.wav", ALICE, 13.0, tmp_path),
              "bob": timeline_wav(tmp_path / "bob.wav", BOB, 13.0, tmp_path)}
    try:
        async with run_gateway(settings, slow) as gw:
            status, call = await gw.post("/v1/calls", {"participants": ["alice", "bob"]})
            assert status == 201, call
            tokens = {p["name"]: p["token"] for p in call["participants"]}
            joins = asyncio.gather(*(join_call(gw.url, call["call_id"], tokens[n], tmp_path / f"{n}.wav",
                                               grace_s=0.5) for n in ("alice", "bob")))

            async def full() -> dict | None:
                status, body = await gw.get("/readyz")
                return body if status == 503 and "ASR backlog" in body["checks"]["capacity"] else None

            ready = await async_wait_until(full, 30, interval_s=0.2, message="never at capacity")
            assert "transcription is behind" in ready["checks"]["capacity"]
            async with aiohttp.ClientSession() as session, session.post(
                    gw.url + "/v1/calls", json={"participants": ["carol"]}) as response:
                refused = await response.json()
                assert response.status == 503 and response.headers["Retry-After"] == "5", refused
            assert "at capacity" in refused["error"] and "ASR backlog" in refused["error"]
            await joins
            status, ended = await gw.post(f"/v1/calls/{call['call_id']}/end", {"token": tokens["alice"]})
            assert status == 200, ended
            utterances, call_ended = await read_call(settings.broker_bootstrap_servers, call["call_id"])
            # nothing lost from the admitted call: every sentence, transcribed
            said = [s.text for name in ("alice", "bob") for s in spoken[name]]
            assert call_ended is not None and len(utterances) == 4, [u.text for u in utterances]
            for text in said:
                assert min(word_error_rate(text, u.text) for u in utterances) <= 0.15, (text, utterances)
            _, metrics = await gw.get("/metrics")
            assert "streamer_asr_degraded_segments_total" in metrics
            # load gone: ready again and new calls admitted
            await async_wait_until(lambda: slow.backlog_s == 0.0, 30)
            status, body = await gw.get("/readyz")
            assert status == 200 and body["checks"]["capacity"] == "ok", body
            status, again = await gw.post("/v1/calls", {"participants": ["carol"]})
            assert status == 201, again
    finally:
        slow.close()
