"""Recognizer worker benchmarks: throughput, cost vs call length, lag under load vs naive.

    python benchmarks/workers_bench.py --meld DIR --out docs/workers_bench.json [--profile]

Starts its own tansu broker and redis-server on 127.0.0.1 and measures, in one run:

* ``throughput``: the worker's batch path (:class:`workers.processor.BatchProcessor`:
  parse, Redis state load/save, batched CBERL update, publish to tansu, Redis stream)
  on micro-batches of B concurrent calls (one new utterance each), and the batched model
  update alone (``add_utterances``, features pre-computed); new utterances and updates
  (Emotion events) per second against B. Every row is measured for the current code and
  for the ``legacy`` code path (the modules of commit :data:`LEGACY_COMMIT`, loaded from
  git into a private package and run on the same model), in the same run, so the ratio
  is meaningful on a noisy machine. A ``cuda`` row is added when a GPU is present.
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
from contracts.call_stream import call_key
from contracts.clock import now_ms
from contracts.events import EmotionEvent, ModalityFeatures, UtteranceEvent
from contracts.topics import ensure_topics
from deploy.services import RedisServer, TansuBroker, free_port
from workers.dead_letter import DeadLetter, Incoming
from workers.metrics import WorkerMetrics
from workers.processor import BatchProcessor
from workers.settings import WorkerSettings
from workers.state import CallStore, Emitted

ROOT = Path(__file__).resolve().parents[1]
LEGACY_COMMIT = "87890fcb172770eb78a9e699b344eb6904ee8c31"
"""The last commit before the vectorised forward, binary state and parse-once worker path."""
LEGACY_MODULES = ("cberl_model/inference.py", "cberl_model/predict.py", "cberl_model/windows.py",
                  "cberl_model/window_graph.py", "workers/processor.py", "workers/state.py",
                  "workers/sequencing.py", "workers/dead_letter.py")


def load_legacy(work: Path) -> Any:
    """The legacy modules as package ``legacy`` (imports among them rewritten; the rest shared).

    Their ``predict_windows`` runs the network's full ``forward`` (what ``predict_proba``
    did then), so the legacy path is the old one end to end on the same weights.
    """
    root = work / "legacy_src"
    for rel in LEGACY_MODULES:
        text = subprocess.run(["git", "show", f"{LEGACY_COMMIT}:{rel}"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
        for other in LEGACY_MODULES:
            name = other[:-3].replace("/", ".")
            text = text.replace(f"from {name} import", f"from legacy.{name} import")
        text = text.replace("model.predict_proba(batch)",
                            "__import__('cberl_model.nn.ensemble', fromlist=['x']).WeakClassifierEnsemble"
                            ".probabilities(model(batch).logits.detach())")
        target = root / "legacy" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    for folder in {root / "legacy", *(root / "legacy" / Path(r).parent for r in LEGACY_MODULES)}:
        (folder / "__init__.py").touch()
    sys.path.insert(0, str(root))
    import importlib

    return {"inference": importlib.import_module("legacy.cberl_model.inference"),
            "processor": importlib.import_module("legacy.workers.processor"),
            "state": importlib.import_module("legacy.workers.state")}


class KafkaSink:
    """What the worker's TopicSink does, with a plain aiokafka producer (no faust app here)."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer, self.topic = producer, topic

    async def publish(self, events: Sequence[Emitted] | Sequence[EmotionEvent]) -> None:
        futures = [await self.producer.send(
            self.topic, e.value if isinstance(e, Emitted) else e.model_dump_json().encode(),
            e.call_id.encode()) for e in events]
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


async def register(store: CallStore, calls: Sequence[str]) -> None:
    """What the streamer does when it creates a call (workers require the call key)."""
    async with store.client.pipeline(transaction=False) as pipe:
        for c in calls:
            pipe.set(call_key(c), "1", ex=3600)
        await pipe.execute()


async def throughput(impls: dict[str, tuple[Any, Any]], corpus: Corpus, store: CallStore,
                     batch_sizes: Sequence[int], steps: int, warm: int) -> list[dict[str, Any]]:
    """Per batch size and implementation: the worker path, then the model alone."""
    rows = []
    for b in batch_sizes:
        for name, (processor, recognizer) in impls.items():
            calls = [f"tp{b}-{name}-{uuid.uuid4().hex[:6]}" for _ in range(b)]
            if name != "legacy":  # the legacy worker kept its record under the call key itself
                await register(store, calls)
            row: dict[str, Any] = {"impl": name, "device": str(recognizer.device), "batch_size": b,
                                   "steps": steps}
            if processor is not None:
                for seq in range(warm):  # full windows, as in the middle of a call
                    await processor.process([incoming(corpus.event(c, seq)) for c in calls])
                emitted_before = emitted(processor)
                start = time.perf_counter()
                for seq in range(warm, warm + steps):
                    await processor.process([incoming(corpus.event(c, seq)) for c in calls])
                path_s = time.perf_counter() - start
                updates = emitted(processor) - emitted_before
                row |= {"worker_utterances_per_s": round(b * steps / path_s, 1),
                        "worker_updates_per_s": round(updates / path_s, 1),
                        "worker_ms_per_batch": round(1000 * path_s / steps, 2)}
            inputs = {c: corpus.inputs(c, warm + steps) for c in calls}
            states = {c: recognizer.open_call(c) for c in calls}
            for seq in range(warm):
                results = recognizer.add_utterances([(states[c], inputs[c][seq]) for c in calls])
                states = {c: s for c, (s, _) in zip(calls, results, strict=True)}
            start, model_updates = time.perf_counter(), 0
            for seq in range(warm, warm + steps):
                results = recognizer.add_utterances([(states[c], inputs[c][seq]) for c in calls])
                states = {c: s for c, (s, _) in zip(calls, results, strict=True)}
                model_updates += sum(len(u) for _, u in results)
            model_s = time.perf_counter() - start
            row |= {"model_utterances_per_s": round(b * steps / model_s, 1),
                    "model_updates_per_s": round(model_updates / model_s, 1),
                    "model_ms_per_batch": round(1000 * model_s / steps, 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def speedups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """New / legacy per batch size (same run), and each implementation's batch-B / batch-1."""
    by = {(r["impl"], r["batch_size"]): r for r in rows}
    out = []
    for (impl, b), r in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if impl != "new":
            continue
        old = by.get(("legacy", b), {})
        entry: dict[str, Any] = {"batch_size": b}
        for k in ("model_utterances_per_s", "worker_utterances_per_s"):
            if k in r and k in old:
                entry[f"{k}_new_over_legacy"] = round(r[k] / old[k], 2)
            one = by.get((impl, 1), {})
            if k in r and k in one:
                entry[f"{k}_over_batch_1"] = round(r[k] / one[k], 2)
        out.append(entry)
    return out


async def cost_vs_length(processor: BatchProcessor, recognizer: EmotionRecognizer, corpus: Corpus,
                         lengths: Sequence[int], naive_repeats: int) -> dict[str, Any]:
    call = f"long-{uuid.uuid4().hex[:6]}"
    await register(processor.store, [call])
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
                     duration_s: float, drain_s: float, redis_url: str) -> dict[str, Any]:
    """Send the steady load and watch the output topic; returns lag and latency figures."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=16384, linger_ms=0)
    consumer = AIOKafkaConsumer(sink, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=None, fetch_max_wait_ms=20)
    await producer.start()
    await consumer.start()
    sent, labelled, latencies, samples = 0, set(), [], []
    call_ids = [f"load-{uuid.uuid4().hex[:6]}-{i}" for i in range(calls)]
    client = aioredis.Redis.from_url(redis_url)
    for c in call_ids:
        await client.set(call_key(c), "1", ex=3600)
    await client.aclose()
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
                                         drain_s, redis_url)
        finally:
            proc.terminate()
            proc.wait(30)
        print(name, json.dumps({k: v for k, v in out[name].items() if k != "lag_samples"}), flush=True)
    return out


async def profile_worker(processor: BatchProcessor, corpus: Corpus, batch: int, warm: int,
                         steps: int) -> str:
    """A pyinstrument profile of the worker path at one batch size (text summary)."""
    from pyinstrument import Profiler

    calls = [f"prof-{uuid.uuid4().hex[:6]}-{i}" for i in range(batch)]
    await register(processor.store, calls)
    for seq in range(warm):
        await processor.process([incoming(corpus.event(c, seq)) for c in calls])
    profiler = Profiler(async_mode="enabled")
    profiler.start()
    for seq in range(warm, warm + steps):
        await processor.process([incoming(corpus.event(c, seq)) for c in calls])
    profiler.stop()
    return profiler.output_text(unicode=False, color=False)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.torch_threads)
    recognizer = EmotionRecognizer.load(device="cpu")
    corpus = Corpus(recognizer, args.meld, 400)
    work = Path(tempfile.mkdtemp(prefix="workers-bench-"))
    legacy = load_legacy(work)
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
        old_recognizer = legacy["inference"].EmotionRecognizer(recognizer.artifact)
        old_metrics = WorkerMetrics()
        old_store = legacy["state"].CallStore(aioredis.Redis.from_url(rds.url), settings.call_stream_ttl_s,
                                              settings.call_stream_maxlen, settings.redis_retry_max_s,
                                              old_metrics)
        old_processor = legacy["processor"].BatchProcessor(old_recognizer, old_store, sink, settings,
                                                           old_metrics)
        impls: dict[str, tuple[Any, Any]] = {"legacy": (old_processor, old_recognizer),
                                             "new": (processor, recognizer)}
        if torch.cuda.is_available():
            impls["new_cuda_model_only"] = (None, EmotionRecognizer.load(device="cuda"))
        try:
            rows = await throughput(impls, corpus, store, args.batch_sizes, args.steps, args.warm)
            result = {
                "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "device": str(recognizer.device), "model": repr(recognizer),
                            "legacy_commit": LEGACY_COMMIT,
                            "note": "2 CPU cores shared with other jobs; compare legacy and new "
                                    "within this run (ratios), not across runs"},
                "throughput": rows,
                "speedup": speedups(rows),
                "state_bytes_per_call": state_sizes(recognizer, corpus),
                "cost_vs_call_length": await cost_vs_length(processor, recognizer, corpus, [10, 100, 1000],
                                                            args.naive_repeats),
            }
            if args.profile:
                text = await profile_worker(processor, corpus, 64, args.warm, args.steps)
                (args.out.parent / "workers_bench_profile.txt").write_text(text)
                print(text[:6000])
        finally:
            await producer.stop()
            await store.client.aclose()
            await old_store.client.aclose()
        if not args.skip_lag:
            result["lag_under_load"] = await lag_under_load(broker, rds.url, corpus, work, args.calls,
                                                            args.interval_s, args.duration_s, args.drain_s)
    return result


def state_sizes(recognizer: EmotionRecognizer, corpus: Corpus) -> dict[str, Any]:
    """Bytes of one call's stored state with a full window, binary vs the old JSON form."""
    state = recognizer.open_call("size-call-0123456789")
    for u in corpus.inputs("size-call-0123456789", recognizer.past + recognizer.future + 3):
        state, _ = recognizer.add_utterance(state, u)
    return {"nodes": len(state.nodes), "binary": len(state.to_bytes()),
            "json_base64": len(json.dumps(state.to_dict(), separators=(",", ":")))}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "naive-worker":
        asyncio.run(naive_worker(*sys.argv[2:6]))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--meld", type=Path, default=ROOT.parent / "shared" / "data" / "meld")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "workers_bench.json")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warm", type=int, default=20, help="utterances per call before timing")
    p.add_argument("--torch-threads", type=int, default=2)
    p.add_argument("--profile", action="store_true", help="pyinstrument the worker path at batch 64")
    p.add_argument("--skip-lag", action="store_true", help="leave out lag_under_load")
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
