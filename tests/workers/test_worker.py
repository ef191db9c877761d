"""Real workers (``python -m workers``) against a real tansu broker and redis-server.

Delivery, ordering and recovery are only proven end to end: MELD dev dialogues replayed as
Utterance events must end with the labels of offline batch inference, through poison
messages, a worker killed mid-call, and Redis going away mid-call.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from cberl_model.inference import EmotionRecognizer
from contracts.call_stream import call_stream_key
from contracts.events import EmotionEvent, UtteranceEvent
from contracts.signing import signature_headers
from deploy.services import RedisServer, TansuBroker, free_port
from tests.factories import utterance
from tests.kafka import produce, read_topic
from tests.waiting import wait_until
from tests.workers.harness import (
    Topics,
    WorkerProcess,
    as_inputs,
    emotions_of,
    ended,
    finals_complete,
    meld_calls,
    register_calls,
    subscriber_view,
)
from workers.dead_letter import DeadLetter
from workers.state import CallRecord, state_key

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def recognizer(single_thread: None) -> EmotionRecognizer:
    return EmotionRecognizer.load(device="cpu", precision="float32")  # as the harness's workers


@pytest.fixture()
def topics() -> Topics:
    return Topics.fresh()


@pytest.fixture()
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Workers a test starts; all stopped at the end whatever happened."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop(timeout_s=30)


def records(events: list[UtteranceEvent]) -> list[tuple[str, bytes]]:
    return [(e.call_id, e.model_dump_json().encode()) for e in events]


def interleaved(calls: list[tuple[str, list[UtteranceEvent]]]) -> list[UtteranceEvent]:
    """The calls' utterances round-robin, as concurrent calls arrive."""
    out, longest = [], max(len(evs) for _, evs in calls)
    for i in range(longest):
        out.extend(evs[i] for _, evs in calls if i < len(evs))
    return out


def assert_matches_batch(recognizer: EmotionRecognizer, view: dict[str, EmotionEvent],
                         calls: list[tuple[str, list[UtteranceEvent]]]) -> None:
    for call_id, events in calls:
        expected = recognizer.predict_conversation(as_inputs(events))
        got = [view[e.utterance_id] for e in events]
        assert all(g.final for g in got), f"{call_id}: not every utterance is final"
        assert [g.label for g in got] == [x.label for x in expected], call_id
        for g, x in zip(got, expected, strict=True):
            np.testing.assert_allclose([g.scores[k] for k in recognizer.labels],
                                       [x.scores[k] for k in recognizer.labels], atol=1e-4)
        assert [g.seq for g in got] == [e.seq for e in events]


def assert_revisions_increase(events: list[EmotionEvent]) -> None:
    """Per utterance, in topic order: the first seen is revision 0, and revisions never go
    back, except by an exact repeat of an event already on the topic.

    A worker killed between publishing a batch and saving its state has the batch
    redelivered; the next owner may group it into micro-batches differently and so emit an
    utterance's earlier revision again after a later one (at-least-once; subscribers keep
    the highest revision). Such a repeat must be the same revision with the same label and
    scores: a recomputation, never a different answer.
    """
    last: dict[str, int] = {}
    seen: dict[tuple[str, int], EmotionEvent] = {}
    for e in events:
        previous = last.get(e.utterance_id)
        key = (e.utterance_id, e.revision)
        if previous is not None and e.revision < previous:
            assert key in seen, f"{e.utterance_id}: revision {e.revision} after {previous}, never seen"
            assert (e.label, e.final) == (seen[key].label, seen[key].final), e
            np.testing.assert_allclose(list(e.scores.values()), list(seen[key].scores.values()),
                                       atol=1e-4)
            continue
        assert previous is not None or e.revision == 0, f"{e.utterance_id}: first seen is {e.revision}"
        seen.setdefault(key, e)
        last[e.utterance_id] = e.revision


def test_meld_replay_equals_batch_and_poison_is_dead_lettered(
        tansu_broker: TansuBroker, redis_server: RedisServer, recognizer: EmotionRecognizer,
        topics: Topics, workers: list[WorkerProcess], meld_dir: Path, tmp_path: Path) -> None:
    bootstrap = tansu_broker.bootstrap_servers
    worker = WorkerProcess(tmp_path / "w", bootstrap, redis_server.url, topics)
    workers.append(worker)
    worker.start()

    calls = meld_calls(meld_dir, 2, min_len=13, max_len=20)  # longer than the kept window (p + f)
    bad_call = [e.model_copy(update={"call_id": "poison-call", "utterance_id": f"p{e.seq}"})
                for e in calls[0][1][:3]]
    wrong_dim = bad_call[1].model_copy(update={"features": bad_call[1].features.model_copy(
        update={"text": [0.5] * 3})})
    future_schema = json.loads(calls[0][1][0].model_dump_json()) | {"schema_version": 2}
    poison = [("x", b"{not json"), ("x", b"\xff\xfe\x00binary"),
              (calls[0][0], json.dumps(future_schema).encode())]
    stream = records(interleaved(calls))
    stream[3:3] = poison
    stream += records([bad_call[0], wrong_dim, bad_call[2]])
    stream += [(c, ended(c, evs).model_dump_json().encode()) for c, evs in calls]
    stream += [("poison-call", ended("poison-call", bad_call).model_dump_json().encode())]
    register_calls(redis_server.url, [*(c for c, _ in calls), "poison-call"])
    asyncio.run(produce(bootstrap, topics.utterances, stream))

    expected = {c: len(evs) for c, evs in calls} | {"poison-call": 2}
    values = asyncio.run(read_topic(bootstrap, topics.emotions, finals_complete(expected), 90))
    events = emotions_of(values)
    view = subscriber_view(events)
    assert_matches_batch(recognizer, view, calls)
    assert_revisions_increase(events)
    assert {u for u, e in view.items() if e.call_id == "poison-call" and e.final} == {"p0", "p2"}
    assert all(e.latency_ms is not None and e.latency_ms >= 0 for e in events)

    letters = [DeadLetter.model_validate_json(v) for v in asyncio.run(
        read_topic(bootstrap, topics.dead_letter, lambda v: len(v) >= 4, 30))]
    by_reason = sorted((x.reason, x.payload_text is None) for x in letters)
    assert by_reason == [("feature_error", False), ("invalid", False), ("invalid", False),
                         ("invalid", True)]
    assert any("schema_version" in x.error for x in letters)
    assert any("text features have shape (3,)" in x.error for x in letters)
    assert all(x.topic == topics.utterances and x.offset >= 0 for x in letters)

    # fan-out: the call's Redis stream holds what the topic holds
    client = redis.Redis.from_url(redis_server.url)
    call_id = calls[0][0]
    streamed = [EmotionEvent.model_validate_json(f[b"event"])
                for _, f in client.xrange(call_stream_key(call_id))]
    assert streamed == [e for e in events if e.call_id == call_id]

    emitted = f"cberl_worker_emotion_events_total {float(len(events))}"
    # the counter moves after the state save, just after the last publish
    wait_until(lambda: emitted in worker.metrics(), 10, interval_s=0.1, message=f"no {emitted!r} on /metrics")
    metrics = worker.metrics()
    assert 'cberl_worker_dead_lettered_total{reason="invalid"} 3.0' in metrics
    assert 'cberl_worker_dead_lettered_total{reason="feature_error"} 1.0' in metrics
    assert "cberl_worker_inference_batch_size_count" in metrics


def redis_errors(worker: WorkerProcess) -> float:
    """``cberl_worker_redis_errors_total`` on the worker's /metrics (failed Redis attempts)."""
    lines = [ln for ln in worker.metrics().splitlines() if ln.startswith("cberl_worker_redis_errors_total ")]
    return float(lines[0].split()[1]) if lines else 0.0


def test_killed_worker_hands_over_mid_call(
        tansu_broker: TansuBroker, redis_server: RedisServer, recognizer: EmotionRecognizer,
        topics: Topics, workers: list[WorkerProcess], meld_dir: Path, tmp_path: Path) -> None:
    bootstrap = tansu_broker.bootstrap_servers
    for name in ("a", "b"):
        workers.append(WorkerProcess(tmp_path / name, bootstrap, redis_server.url, topics, name=name))
        workers[-1].start()
    shares: list[set[int]] = []

    def split() -> bool:  # the group settles: two disjoint halves of 4 partitions
        shares[:] = [w.assigned() for w in workers]
        return all(shares) and len(shares[0] | shares[1]) == 4 and not shares[0] & shares[1]

    wait_until(split, 60, interval_s=0.3,
               message=lambda: f"partitions never split between the workers: {shares}")

    calls = meld_calls(meld_dir, 4, min_len=8, max_len=14)
    partitioner = DefaultPartitioner()
    call_partition = {c: partitioner(c.encode(), [0, 1, 2, 3], [0, 1, 2, 3]) for c, _ in calls}
    victim = max(workers, key=lambda w: sum(call_partition[c] in w.assigned() for c, _ in calls))
    assert any(call_partition[c] in victim.assigned() for c, _ in calls)

    register_calls(redis_server.url, [c for c, _ in calls])
    first = [(c, evs[: len(evs) // 2]) for c, evs in calls]
    asyncio.run(produce(bootstrap, topics.utterances, records(interleaved(first))))
    half = {e.utterance_id for _, evs in first for e in evs}
    asyncio.run(read_topic(bootstrap, topics.emotions,
                           lambda v: half <= {json.loads(x)["utterance_id"] for x in v}, 60))
    victim.kill()

    rest = [(c, evs[len(evs) // 2:]) for c, evs in calls]
    asyncio.run(produce(bootstrap, topics.utterances, records(interleaved(rest))
                        + [(c, ended(c, evs).model_dump_json().encode()) for c, evs in calls]))
    values = asyncio.run(read_topic(bootstrap, topics.emotions,
                                    finals_complete({c: len(evs) for c, evs in calls}), 120))
    survivor = next(w for w in workers if w is not victim)
    assert survivor.running
    assert survivor.assigned() == {0, 1, 2, 3}
    events = emotions_of(values)
    assert_matches_batch(recognizer, subscriber_view(events), calls)
    assert_revisions_increase(events)


def test_redis_restart_mid_call(
        tansu_broker: TansuBroker, recognizer: EmotionRecognizer, topics: Topics,
        workers: list[WorkerProcess], meld_dir: Path, tmp_path: Path) -> None:
    bootstrap = tansu_broker.bootstrap_servers
    redis_dir = tmp_path / "redis"
    server = RedisServer(free_port(), redis_dir)
    server.start()
    try:
        worker = WorkerProcess(tmp_path / "w", bootstrap, server.url, topics, "--redis-retry-max-s", "0.5")
        workers.append(worker)
        worker.start()
        ((call_id, events),) = meld_calls(meld_dir, 1, min_len=14, max_len=24)
        register_calls(server.url, [call_id])

        def labelled(upto: int, timeout_s: float = 60) -> list[EmotionEvent]:
            wanted = {e.utterance_id for e in events[:upto]}
            return emotions_of(asyncio.run(read_topic(
                bootstrap, topics.emotions, lambda v: wanted <= {json.loads(x)["utterance_id"] for x in v},
                timeout_s)))

        asyncio.run(produce(bootstrap, topics.utterances, records(events[:4])))
        labelled(4)
        # 1) Redis restarts (same data): the worker waits, then carries on with the same graph
        server.stop()
        asyncio.run(produce(bootstrap, topics.utterances, records(events[4:8])))
        wait_until(lambda: redis_errors(worker) >= 3, 30, interval_s=0.2,
                   message="the worker never retried Redis three times")
        assert worker.running, "the worker must wait for Redis, not exit"
        assert "redis unavailable" in worker.output()
        server.start()
        labelled(8)
        assert "redis is back" in worker.output()
        client = redis.Redis.from_url(server.url)
        def saved_next_seq() -> int | None:
            raw = client.get(state_key(call_id))
            return None if raw is None else CallRecord.from_bytes(raw).next_seq

        wait_until(lambda: saved_next_seq() == 8,
                   30, interval_s=0.1,  # the batch's state is saved (after its events were published)
                   message="the call's state was never saved with next_seq 8")
        client.close()
        # 2) Redis comes back empty: the lost state is reported and new utterances still get labels
        server.stop()
        shutil.rmtree(redis_dir)
        server.start()
        register_calls(server.url, [call_id])  # the streamer's key was lost with the data too
        asyncio.run(produce(bootstrap, topics.utterances, records(events[8:])
                            + [(call_id, ended(call_id, events).model_dump_json().encode())]))
        values = asyncio.run(read_topic(bootstrap, topics.emotions,
                                        finals_complete({call_id: len(events) - 2}), 60))
    finally:
        server.stop()
    assert worker.running
    assert "no stored state but the call is under way" in worker.output()
    view = subscriber_view(emotions_of(values))
    assert set(view) == {e.utterance_id for e in events}, "every utterance got a label"
    # up to the restart with the same data, the labels are exactly the batch ones
    expected = recognizer.predict_conversation(as_inputs(events))
    assert [view[e.utterance_id].label for e in events[:6]] == [x.label for x in expected[:6]]
    assert all(view[e.utterance_id].final for e in events[:6] + events[8:])


async def produce_raw(bootstrap: str, topic: str,
                      records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> None:
    """Send ``(key, value, headers)`` records in order, values up to 8 MB."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=16384, linger_ms=0,
                                max_request_size=8 * 1024 * 1024)
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(topic, value=value, key=key, headers=headers)
    finally:
        await producer.stop()


def labelled_or_dead(values: list[bytes], letters: list[bytes], wanted: set[str], dead: int) -> bool:
    return wanted <= {json.loads(v)["utterance_id"] for v in values} and len(letters) >= dead


def test_every_record_is_processed_or_dead_lettered(
        tansu_broker: TansuBroker, redis_server: RedisServer, topics: Topics,
        workers: list[WorkerProcess], meld_dir: Path, tmp_path: Path) -> None:
    """H7: a 5 MB invalid record is dead-lettered (bounded) and the records after it are
    processed; an utterance of a call the streamer never created is dead-lettered."""
    bootstrap = tansu_broker.bootstrap_servers
    worker = WorkerProcess(tmp_path / "w", bootstrap, redis_server.url, topics)
    workers.append(worker)
    worker.start()
    ((call_id, events),) = meld_calls(meld_dir, 1, min_len=5, max_len=8)
    register_calls(redis_server.url, [call_id])
    huge = b'{"type": "utterance", "text": "' + b"x" * (5 * 1024 * 1024) + b'"'
    stranger = events[0].model_copy(update={"call_id": "never-created", "utterance_id": "stranger-0"})
    stream = [(call_id.encode(), huge, []), *((e.call_id.encode(), e.model_dump_json().encode(), [])
                                              for e in events),
              (b"never-created", stranger.model_dump_json().encode(), [])]
    asyncio.run(produce_raw(bootstrap, topics.utterances, stream))

    wanted = {e.utterance_id for e in events}
    values = asyncio.run(read_topic(bootstrap, topics.emotions,
                                    lambda v: wanted <= {json.loads(x)["utterance_id"] for x in v}, 90))
    letters = [DeadLetter.model_validate_json(v) for v in asyncio.run(
        read_topic(bootstrap, topics.dead_letter, lambda v: len(v) >= 2, 30))]
    labelled = {e.utterance_id for e in emotions_of(values)}
    assert labelled == wanted, "every valid record after the huge one was processed"
    assert sorted(x.reason for x in letters) == ["invalid", "unknown_call"]
    big = next(x for x in letters if x.reason == "invalid")
    assert big.payload_size == len(huge) and big.payload_truncated
    assert big.payload_sha256 == hashlib.sha256(huge).hexdigest()
    assert len(big.model_dump_json()) < 16_000
    assert len(labelled) + len(letters) == len(stream), "each record processed or dead-lettered"
    assert worker.running


def test_with_a_secret_only_signed_records_are_processed(
        tansu_broker: TansuBroker, redis_server: RedisServer, topics: Topics,
        workers: list[WorkerProcess], tmp_path: Path) -> None:
    bootstrap = tansu_broker.bootstrap_servers
    secret = b"s3cret-for-the-test"
    worker = WorkerProcess(tmp_path / "w", bootstrap, redis_server.url, topics,
                           "--event-secret", secret.decode())
    workers.append(worker)
    worker.start()
    register_calls(redis_server.url, ["signed-call"])
    good, unsigned, forged = (utterance(i, call_id="signed-call") for i in range(3))

    def record(e: UtteranceEvent, headers: list[tuple[str, bytes]]) -> tuple[bytes, bytes, list]:
        return e.call_id.encode(), e.model_dump_json().encode(), headers

    key = b"signed-call"
    stream = [record(good, signature_headers(secret, key, good.model_dump_json().encode())),
              record(unsigned, []),
              record(forged, signature_headers(b"wrong secret", key, forged.model_dump_json().encode()))]
    asyncio.run(produce_raw(bootstrap, topics.utterances, stream))
    letters = [DeadLetter.model_validate_json(v) for v in asyncio.run(
        read_topic(bootstrap, topics.dead_letter, lambda v: len(v) >= 2, 60))]
    assert sorted(x.reason for x in letters) == ["forged", "unsigned"]
    values = asyncio.run(read_topic(bootstrap, topics.emotions, lambda v: len(v) >= 1, 30))
    assert {e.utterance_id for e in emotions_of(values)} == {good.utterance_id}
