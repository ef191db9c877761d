"""Recognizer worker benchmarks: throughput, cost vs call length, lag under load vs naive.

    OMP_NUM_THREADS=1 python benchmarks/workers_bench.py --meld DIR --out docs/workers_bench.json

Starts its own tansu broker and redis-server on 127.0.0.1 and measures, in one run:

* ``throughput``: the worker's batch path (:class:`workers.processor.BatchProcessor`:
  parse, Redis state load/save, batched CBERL update, publish to tansu, Redis stream)
  on micro-batches of B concurrent calls (one new utterance each), and the batched model
  update alone; utterance updates (Emotion events) per second against B.
* ``cost_vs_call_length``: one call grown to 1,000 utterances through the same path; the
  median cost of an update near utterance 10, 100 and 1,000, and the ratio 1,000 / 10. The
  naive baseline re-runs batch inference over the whole call so far for each utterance.
* ``lag_under_load``: N concurrent calls, each sending one utterance every ``interval``
  seconds for ``duration`` seconds, to a real worker (``python -m workers``), then the same
  load to a naive worker (plain aiokafka consumer that re-infers each whole call on every
  utterance). Lag = utterances sent but not yet labelled (revision 0 seen on the output
  topic), sampled every 0.5 s; latency = revision-0 ``emitted_at - end_of_speech_at``.

Text vectors are computed once up front (the streamer sends featurized utterances).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis
import torch
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from cberl_model.data.meld import read_meld_csv
from cberl_model.inference import EmotionRecognizer, UtteranceInput
from contracts.clock import now_ms
from contracts.events import EmotionEvent, ModalityFeatures, UtteranceEvent
from contracts.topics import ensure_topics
from deploy.services import RedisServer, TansuBroker, free_port
from workers.dead_letter import DeadLetter, Incoming
from workers.metrics import WorkerMetrics
from workers.processor import BatchProcessor
from workers.settings import WorkerSettings
from workers.state import CallStore

ROOT = Path(__file__).resolve().parents[1]


class KafkaSink:
    """What the worker's TopicSink does, with a plain aiokafka producer (no faust app here)."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer, self.topic = producer, topic

    async def publish(self, events: Sequence[EmotionEvent]) -> None:
        futures = [await self.producer.send(self.topic, e.model_dump_json().encode(), e.call_id.encode())
                   for e in events]
        await asyncio.gather(*futures)

    async def dead_letter(self, letters: Sequence[tuple[Incoming, DeadLetter]]) -> None:
        raise AssertionError(f"benchmark input was dead-lettered: {letters[0][1].error}")


class Corpus:
    """MELD dev utterances with their text vectors, cycled to make calls of any length."""

    def __init__(self, recognizer: EmotionRecognizer, meld: Path, size: int) -> None:
        utts = [u for conv in read_meld_csv(meld / "dev_sent_emo.csv").conversations for u in conv][:size]
        vectors = recognizer.featurize([UtteranceInput(u.utterance_id, u.speaker, text=u.text) for u in utts])
        self.items = [(u.speaker, u.text or "", v["text"].tolist())
                      for u, v in zip(utts, vectors, strict=True)]

    def event(self, call_id: str, seq: int) -> UtteranceEvent:
        speaker, text, vec = self.items[seq % len(self.items)]
        stamp = now_ms()
        return UtteranceEvent(call_id=call_id, utterance_id=f"{call_id}-{seq}", seq=seq, speaker_id=speaker,
                              start_ms=seq * 1000, end_ms=seq * 1000 + 900, text=text,
                              features=ModalityFeatures(text=vec), feature_spec_id="bench",
                              produced_at=stamp, end_of_speech_at=stamp)

    def inputs(self, call_id: str, n: int) -> list[UtteranceInput]:
        return [UtteranceInput(f"{call_id}-{i}", self.items[i % len(self.items)][0],
                               features={"text": self.items[i % len(self.items)][2]}) for i in range(n)]


def incoming(event: UtteranceEvent) -> Incoming:
    return Incoming(value=event.model_dump_json().encode(), key=event.call_id.encode(), topic="bench",
                    partition=0, offset=0)


def emitted(processor: BatchProcessor) -> float:
    return processor.metrics.registry.get_sample_value("cberl_worker_emotion_events_total") or 0.0


def median_ms(samples_s: Sequence[float]) -> float:
    return round(1000 * float(np.median(samples_s)), 3)


async def throughput(processor: BatchProcessor, recognizer: EmotionRecognizer, corpus: Corpus,
                     batch_sizes: Sequence[int], steps: int) -> list[dict[str, Any]]:
    rows = []
    warm = recognizer.past + recognizer.future
    for b in batch_sizes:
        calls = [f"tp{b}-{uuid.uuid4().hex[:6]}" for _ in range(b)]
        for seq in range(warm):  # full windows, as in the middle of a call
            await processor.process([incoming(corpus.event(c, seq)) for c in calls])
        emitted_before = emitted(processor)
        start = time.perf_counter()
        for seq in range(warm, warm + steps):
            await processor.process([incoming(corpus.event(c, seq)) for c in calls])
        path_s = time.perf_counter() - start
        updates = emitted(processor) - emitted_before
        states = {c: recognizer.open_call(c) for c in calls}
        for seq in range(warm):
            for c, (s, _) in zip(calls, recognizer.add_utterances(
                    [(states[c], corpus.inputs(c, seq + 1)[-1]) for c in calls]), strict=True):
                states[c] = s
        start = time.perf_counter()
        for seq in range(warm, warm + steps):
            results = recognizer.add_utterances([(states[c], corpus.inputs(c, seq + 1)[-1]) for c in calls])
            states = {c: s for c, (s, _) in zip(calls, results, strict=True)}
        model_s = time.perf_counter() - start
        rows.append({"batch_size": b, "steps": steps, "updates": int(updates),
                     "worker_path_updates_per_s": round(updates / path_s, 1),
                     "worker_path_ms_per_batch": round(1000 * path_s / steps, 2),
                     "model_only_updates_per_s": round(updates / model_s, 1),
                     "model_only_ms_per_batch": round(1000 * model_s / steps, 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


async def cost_vs_length(processor: BatchProcessor, recognizer: EmotionRecognizer, corpus: Corpus,
                         lengths: Sequence[int], naive_repeats: int) -> dict[str, Any]:
    call = f"long-{uuid.uuid4().hex[:6]}"
    path_s, model_s = [], []
    state = recognizer.open_call(call + "-m")
    inputs = corpus.inputs(call, max(lengths))
    for seq in range(max(lengths)):
        start = time.perf_counter()
        await processor.process([incoming(corpus.event(call, seq))])
        path_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        state, _ = recognizer.add_utterance(state, inputs[seq])
        model_s.append(time.perf_counter() - start)
    rows = []
    for n in lengths:
        naive = []
        for _ in range(naive_repeats):
            start = time.perf_counter()
            recognizer.predict_conversation(inputs[:n])
            naive.append(time.perf_counter() - start)
        # the updates just before utterance n (from the 4th on: the first ones label fewer windows)
        recent = slice(max(recognizer.future + 1, n - 30), n)
        rows.append({"call_length": n, "samples": recent.stop - recent.start,
                     "worker_path_ms": median_ms(path_s[recent]), "model_only_ms": median_ms(model_s[recent]),
                     "naive_ms": median_ms(naive), "naive_samples": naive_repeats})
        print(json.dumps(rows[-1]), flush=True)
    first, last = rows[0], rows[-1]
    return {"rows": rows, "ratio_longest_to_shortest": {
        k: round(last[k] / first[k], 2) for k in ("worker_path_ms", "model_only_ms", "naive_ms")}}


# -- lag under load -------------------------------------------------------------------------
async def naive_worker(bootstrap: str, source: str, sink: str, group: str) -> None:
    """The baseline: keep each whole call in memory and re-infer all of it on every utterance."""
    recognizer = EmotionRecognizer.load()
    history: dict[str, list[UtteranceInput]] = {}
    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=20)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=16384, linger_ms=0)
    await consumer.start()
    await producer.start()
    print("naive worker ready", flush=True)
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=64)
            for records in batches.values():
                for record in records:
                    event = UtteranceEvent.model_validate_json(record.value)
                    calls = history.setdefault(event.call_id, [])
                    calls.append(UtteranceInput(event.utterance_id, event.speaker_id,
                                                features=event.features.as_dict()))
                    labels = recognizer.predict_conversation(calls)  # the whole call, every time
                    stamp = now_ms()
                    futures = []
                    for i in range(max(0, len(calls) - 1 - recognizer.future), len(calls)):
                        out = EmotionEvent(call_id=event.call_id, utterance_id=labels[i].utterance_id, seq=i,
                                           speaker_id=labels[i].speaker_id, label=labels[i].label,
                                           scores=labels[i].scores, revision=len(calls) - 1 - i,
                                           final=len(calls) - 1 - i >= recognizer.future, model_id="naive",
                                           latency_ms=float(stamp - (event.end_of_speech_at or stamp)),
                                           emitted_at=stamp)
                        futures.append(await producer.send(sink, out.model_dump_json().encode(),
                                                           event.call_id.encode()))
                    await asyncio.gather(*futures)
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


async def drive_load(bootstrap: str, source: str, sink: str, corpus: Corpus, calls: int, interval_s: float,
                     duration_s: float, drain_s: float) -> dict[str, Any]:
    """Send the steady load and watch the output topic; returns lag and latency figures."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=16384, linger_ms=0)
    consumer = AIOKafkaConsumer(sink, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=None, fetch_max_wait_ms=20)
    await producer.start()
    await consumer.start()
    sent, labelled, latencies, samples = 0, set(), [], []
    call_ids = [f"load-{uuid.uuid4().hex[:6]}-{i}" for i in range(calls)]
    stop = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=100)).values():
                for r in records:
                    e = json.loads(r.value)
                    if e["revision"] == 0 and e["utterance_id"] not in labelled:
                        labelled.add(e["utterance_id"])
                        latencies.append(e["latency_ms"])

    async def sample() -> None:
        start = time.monotonic()
        while not stop.is_set():
            samples.append((round(time.monotonic() - start, 1), sent - len(labelled)))
            await asyncio.sleep(0.5)

    tasks = [asyncio.ensure_future(watch()), asyncio.ensure_future(sample())]
    start = time.monotonic()
    tick = interval_s / calls
    for n in itertools.count():
        due = start + n * tick
        if due - start >= duration_s:
            break
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        call, seq = call_ids[n % calls], n // calls
        value = corpus.event(call, seq).model_dump_json().encode()
        await producer.send_and_wait(source, value, call.encode())
        sent += 1
    load_end = time.monotonic()
    lag_at_end = sent - len(labelled)
    while sent - len(labelled) > 0 and time.monotonic() - load_end < drain_s:  # noqa: ASYNC110 - polls a count
        await asyncio.sleep(0.2)
    drained_s = time.monotonic() - load_end
    stop.set()
    await asyncio.gather(*tasks)
    await producer.stop()
    await consumer.stop()
    lat = np.asarray(latencies, dtype=float)
    return {"sent": sent, "labelled": len(labelled), "utterances_per_call": sent // calls,
            "lag_max": max(s[1] for s in samples), "lag_at_load_end": lag_at_end,
            "lag_after_drain": sent - len(labelled),
            "drain_s": round(drained_s, 1) if sent == len(labelled) else f">{drain_s}",
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
            "latency_ms_p95": round(float(np.percentile(lat, 95)), 1) if lat.size else None,
            "lag_samples": samples[::4]}


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=open(log, "ab"),  # noqa: SIM115
                            stderr=subprocess.STDOUT)


def wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited: {log.read_text()[-2000:]}")
        if text in log.read_text(errors="replace"):
            return
        time.sleep(0.3)
    raise RuntimeError(f"{proc.args} not ready: {log.read_text()[-2000:]}")


async def lag_under_load(broker: TansuBroker, redis_url: str, corpus: Corpus, work: Path,
                         calls: int, interval_s: float, duration_s: float, drain_s: float) -> dict[str, Any]:
    bootstrap = broker.bootstrap_servers
    out: dict[str, Any] = {"calls": calls, "interval_s": interval_s, "duration_s": duration_s,
                           "offered_utterances_per_s": round(calls / interval_s, 1)}
    for name in ("incremental_worker", "naive_baseline"):
        tag = uuid.uuid4().hex[:6]
        source, sink = f"load-utt-{tag}", f"load-emo-{tag}"
        await ensure_topics(bootstrap, {source: 4, sink: 4, f"load-dlq-{tag}": 1})
        log = work / f"{name}.log"
        if name == "incremental_worker":
            proc = spawn(["-m", "workers", "--broker-bootstrap-servers", bootstrap, "--redis-url", redis_url,
                          "--utterances-topic", source, "--emotions-topic", sink, "--dead-letter-topic",
                          f"load-dlq-{tag}", "--app-id", f"load-{tag}", "--partitions", "4"], log)
            ready = "Ready"
        else:
            proc = spawn([__file__, "naive-worker", bootstrap, source, sink, f"naive-{tag}"], log)
            ready = "naive worker ready"
        try:
            await asyncio.to_thread(wait_for, log, ready, proc)
            await asyncio.sleep(2)  # let the group settle
            out[name] = await drive_load(bootstrap, source, sink, corpus, calls, interval_s, duration_s,
                                         drain_s)
        finally:
            proc.terminate()
            proc.wait(30)
        print(name, json.dumps({k: v for k, v in out[name].items() if k != "lag_samples"}), flush=True)
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    recognizer = EmotionRecognizer.load()
    corpus = Corpus(recognizer, args.meld, 400)
    work = Path(tempfile.mkdtemp(prefix="workers-bench-"))
    with TansuBroker(free_port(), work / "tansu") as broker, RedisServer(free_port(), work / "redis") as rds:
        await ensure_topics(broker.bootstrap_servers, {"bench-emotions": 4})
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, max_batch_size=16384,
                                    linger_ms=0)
        await producer.start()
        settings = WorkerSettings()
        metrics = WorkerMetrics()
        store = CallStore(aioredis.Redis.from_url(rds.url), settings.call_stream_ttl_s,
                          settings.call_stream_maxlen, settings.redis_retry_max_s, metrics)
        sink = KafkaSink(producer, "bench-emotions")
        processor = BatchProcessor(recognizer, store, sink, settings, metrics)
        try:
            result = {
                "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "device": str(recognizer.device), "model": repr(recognizer),
                            "note": "2 CPU cores shared with other jobs; figures are indicative"},
                "throughput": await throughput(processor, recognizer, corpus, args.batch_sizes, args.steps),
                "cost_vs_call_length": await cost_vs_length(processor, recognizer, corpus, [10, 100, 1000],
                                                            args.naive_repeats),
            }
        finally:
            await producer.stop()
            await store.client.aclose()
        result["lag_under_load"] = await lag_under_load(broker, rds.url, corpus, work, args.calls,
                                                        args.interval_s, args.duration_s, args.drain_s)
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "naive-worker":
        asyncio.run(naive_worker(*sys.argv[2:6]))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--meld", type=Path, default=ROOT.parent / "shared" / "data" / "meld")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "workers_bench.json")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--naive-repeats", type=int, default=3)
    p.add_argument("--calls", type=int, default=16)
    p.add_argument("--interval-s", type=float, default=0.5)
    p.add_argument("--duration-s", type=float, default=30.0)
    p.add_argument("--drain-s", type=float, default=30.0)
    args = p.parse_args()
    result = {"command": " ".join(sys.argv), **asyncio.run(run(args))}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
