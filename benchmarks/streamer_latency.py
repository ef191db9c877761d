"""Streamer latency on this machine: end of speech -> Utterance event published.

Starts tansu, redis-server and the gateway (``python -m streamer``) as child processes on
127.0.0.1 (``deploy.services``), then for each concurrency level
N runs N one-participant calls at once, each a real aiortc client (``streamer.join``, all
in this process) streaming an espeak-ng script (``deploy.speech``) in real time. It reads
every utterance back from the ``utterances`` topic and reports, per level:

- ``latency_ms`` p50/p95/max: ``produced_at - end_of_speech_at`` of each event, i.e. from
  the wall clock of the last speech sample's arrival (so the VAD's silence wait is
  included) to the event being handed to the producer (the broker's ack adds ~ms);
- ``latency_trend_ms``: mean latency of each call's last utterances minus its first ones
  (a growing queue, i.e. latency without bound, shows as a large positive trend);
- ``asr_rtf``: mean ASR compute time / audio duration (gateway's ``/metrics``).

Usage: ``python benchmarks/streamer_latency.py --levels 1 2 4 6 --out docs/streamer_latency.json``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaConsumer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cberl_model.features.whisper_model import whisper_cpu_threads  # noqa: E402
from contracts.events import CallEnded, UtteranceEvent, parse_utterances_message  # noqa: E402
from contracts.topics import UTTERANCES_TOPIC  # noqa: E402
from deploy.services import PythonService, RedisServer, TansuBroker, free_port  # noqa: E402
from deploy.speech import timeline_wav  # noqa: E402
from streamer.join import create_call, join_call  # noqa: E402

SCRIPT = [(1.0, "Can you send me the report before the meeting tomorrow?"),
          (5.5, "Do you want to have dinner with us tonight?"),
          (9.5, "I think we need to buy more coffee."),
          (13.5, "Thank you for helping me with my homework."),
          (17.5, "Where did you put the keys to the car?")]
SCRIPT_S = 21.0


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(round(q * (len(ordered) - 1))), len(ordered) - 1)]


async def _metric_sum_count(url: str, name: str) -> tuple[float, float]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        text = await response.text()
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith(name + "_sum") or line.startswith(name + "_count")}
    return values.get(name + "_sum", 0.0), values.get(name + "_count", 0.0)


async def _utterances_of(bootstrap: str, call_ids: list[str], timeout_s: float
                         ) -> dict[str, list[UtteranceEvent]]:
    """Each call's utterances on the ``utterances`` topic, read until every call has ended."""
    wanted = {c.encode(): c for c in call_ids}
    utterances: dict[str, list[UtteranceEvent]] = {c: [] for c in call_ids}
    open_calls = set(call_ids)
    consumer = AIOKafkaConsumer(UTTERANCES_TOPIC, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, fetch_max_wait_ms=50)
    await consumer.start()
    deadline = time.monotonic() + timeout_s
    try:
        while open_calls and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    call_id = wanted.get(record.key)
                    if call_id not in open_calls:
                        continue
                    event = parse_utterances_message(record.value)
                    if isinstance(event, CallEnded):
                        open_calls.discard(call_id)
                    else:
                        utterances[call_id].append(event)
    finally:
        await consumer.stop()
    return utterances


async def _level(url: str, bootstrap: str, wav: Path, n: int) -> dict[str, object]:
    calls = [await create_call(url, [f"speaker{i}"]) for i in range(n)]
    rtf_before = await _metric_sum_count(url, "streamer_asr_real_time_factor")
    await asyncio.gather(*(join_call(url, c["call_id"], c["participants"][0]["token"], wav, grace_s=1.5,
                                     end_call=True) for c in calls))
    latencies, trends, counts = [], [], []
    read = await _utterances_of(bootstrap, [c["call_id"] for c in calls], timeout_s=30)
    for utterances in read.values():
        lat = [u.produced_at - u.end_of_speech_at for u in utterances if u.end_of_speech_at]
        latencies += lat
        counts.append(len(utterances))
        if len(lat) >= 4:
            trends.append(statistics.mean(lat[-2:]) - statistics.mean(lat[:2]))
    rtf_after = await _metric_sum_count(url, "streamer_asr_real_time_factor")
    rtf_n = rtf_after[1] - rtf_before[1]
    return {"participants": n, "utterances_expected": n * len(SCRIPT), "utterances": sum(counts),
            "latency_ms": {"p50": _pct(latencies, 0.5), "p95": _pct(latencies, 0.95),
                           "max": max(latencies)} if latencies else None,
            "latency_trend_ms": round(statistics.mean(trends), 1) if trends else None,
            "asr_rtf": round((rtf_after[0] - rtf_before[0]) / rtf_n, 3) if rtf_n else None}


async def _measure(url: str, bootstrap: str, wav: Path, levels: list[int]) -> list[dict[str, object]]:
    results = []
    for n in levels:
        result = await _level(url, bootstrap, wav, n)
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


def main(levels: list[int], out: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="streamer-bench-"))
    wav = work / "script.wav"
    timeline_wav(wav, SCRIPT, SCRIPT_S, work)
    port = free_port()
    with TansuBroker(free_port(), work / "tansu") as broker, \
            RedisServer(free_port(), work / "redis") as redis:
        env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "CBERL_PORT": str(port),
               "CBERL_BROKER_BOOTSTRAP_SERVERS": broker.bootstrap_servers, "CBERL_REDIS_URL": redis.url}
        # ready when its own /readyz answers (broker and Redis reachable); output in work/streamer
        with PythonService("streamer", "streamer", [], port, "/readyz", work / "streamer", env):
            results = asyncio.run(_measure(f"http://127.0.0.1:{port}", broker.bootstrap_servers, wav, levels))
    report = {
        "what": "end of speech (wall clock of the last speech sample) -> Utterance event handed to "
                "the producer; N one-participant calls at once, real aiortc clients in one process "
                "on the same machine, espeak-ng script of 5 utterances in 21 s per participant",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_at_start": os.getloadavg()[0],
                    "note": "the clients share the CPU with the gateway"},
        "asr": f"faster-whisper tiny.en int8 CPU, {whisper_cpu_threads()} threads, beam 1",
        "vad_min_silence_ms": 250,
        "command": "python benchmarks/streamer_latency.py --levels " + " ".join(map(str, levels)),
        "levels": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 6])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "streamer_latency.json")
    args = parser.parse_args()
    main(args.levels, args.out)
