"""Test harness: MELD dialogues as Utterance events, real worker processes, topic readers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from cberl_model.data.meld import read_meld_csv
from cberl_model.inference import UtteranceInput
from workers.events import CallEnded, EmotionEvent, UtteranceEvent

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Topics:
    """Unique topic names and consumer group per test (the broker is shared)."""

    utterances: str
    emotions: str
    dead_letter: str
    app_id: str

    @classmethod
    def fresh(cls) -> Topics:
        tag = uuid.uuid4().hex[:8]
        return cls(f"utt-{tag}", f"emo-{tag}", f"dlq-{tag}", f"grp-{tag}")


def meld_calls(meld_dir: Path, count: int, min_len: int, max_len: int = 1000
               ) -> list[tuple[str, list[UtteranceEvent]]]:
    """``count`` MELD dev dialogues of ``min_len..max_len`` utterances as Utterance events."""
    corpus = read_meld_csv(meld_dir / "dev_sent_emo.csv")
    out = []
    for conv in corpus.conversations:
        if min_len <= len(conv) <= max_len:
            call_id = f"meld-{conv.conversation_id}-{uuid.uuid4().hex[:4]}"
            out.append((call_id, [UtteranceEvent(
                call_id=call_id, utterance_id=u.utterance_id, seq=i, speaker_id=u.speaker,
                start_ms=i * 1000, end_ms=i * 1000 + 900, text=u.text or "",
                feature_spec_id="test") for i, u in enumerate(conv)]))
            if len(out) == count:
                return out
    raise AssertionError(f"MELD dev has fewer than {count} dialogues of {min_len}..{max_len} utterances")


def as_inputs(events: Iterable[UtteranceEvent]) -> list[UtteranceInput]:
    return [UtteranceInput(e.utterance_id, e.speaker_id, text=e.text) for e in events]


def ended(call_id: str, events: list[UtteranceEvent]) -> CallEnded:
    return CallEnded(call_id=call_id, last_seq=len(events) - 1)


async def produce(bootstrap: str, topic: str, records: Iterable[tuple[str, bytes]],
                  pause_s: float = 0.0) -> None:
    """Send ``(key, value)`` records in order (one at a time: tansu needs batch size 1)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=16384, linger_ms=0)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value=value, key=key.encode())
            if pause_s:
                await asyncio.sleep(pause_s)
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str, done: Callable[[list[bytes]], bool],
                     timeout_s: float) -> list[bytes]:
    """Values of ``topic`` from the beginning until ``done(values)`` or the timeout."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, fetch_max_wait_ms=50)
    await consumer.start()
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not done(values) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                values.extend(r.value for r in records)
    finally:
        await consumer.stop()
    return values


def emotions_of(values: list[bytes]) -> list[EmotionEvent]:
    return [EmotionEvent.model_validate_json(v) for v in values]


def finals_complete(expected: dict[str, int]) -> Callable[[list[bytes]], bool]:
    """Done when every call has a final label for each of its ``expected[call]`` utterances."""
    def done(values: list[bytes]) -> bool:
        finals: dict[str, set[str]] = {}
        for v in values:
            e = json.loads(v)
            if e["final"]:
                finals.setdefault(e["call_id"], set()).add(e["utterance_id"])
        return all(len(finals.get(c, ())) >= n for c, n in expected.items())
    return done


def subscriber_view(events: list[EmotionEvent]) -> dict[str, EmotionEvent]:
    """What a subscriber keeps: the highest revision per utterance_id."""
    view: dict[str, EmotionEvent] = {}
    for e in events:
        if e.utterance_id not in view or e.revision > view[e.utterance_id].revision:
            view[e.utterance_id] = e
    return view


class WorkerProcess:
    """``python -m workers`` as a child process (single-threaded torch), output in a file."""

    def __init__(self, log_path: Path, bootstrap: str, redis_url: str, topics: Topics,
                 *extra: str) -> None:
        self.log_path = log_path
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "TOKENIZERS_PARALLELISM": "false"}
        args = [sys.executable, "-m", "workers", "--broker-bootstrap-servers", bootstrap,
                "--redis-url", redis_url,
                "--utterances-topic", topics.utterances, "--emotions-topic", topics.emotions,
                "--dead-letter-topic", topics.dead_letter, "--app-id", topics.app_id,
                "--partitions", "4", "--device", "cpu", *extra]
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_assigned(self, timeout_s: float = 90.0) -> None:
        """Until the worker has joined the group and got partitions (it logs the assignment)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise AssertionError(f"worker exited with {code}:\n{self.output()[-3000:]}")
            if "Ready" in self.output():
                return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout_s} s:\n{self.output()[-3000:]}")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
