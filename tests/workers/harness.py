"""Test harness: MELD dialogues as Utterance events, real worker processes, what subscribers see.

Topics are read and written with :mod:`tests.kafka`."""

from __future__ import annotations

import contextlib
import json
import re
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import redis

from cberl_model.data.meld import read_meld_csv
from cberl_model.inference import UtteranceInput
from contracts.call_stream import call_key
from contracts.events import CallEnded, EmotionEvent, UtteranceEvent
from deploy.services import HOST, free_port
from tests.factories import call_ended, utterance
from tests.fixtures_services import ServiceProcess

ROOT = Path(__file__).resolve().parents[2]
"""The repository root (where ``python -m workers`` runs)."""


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
            out.append((call_id, [utterance(i, call_id=call_id, utterance_id=u.utterance_id,
                                            speaker_id=u.speaker, text=u.text or "")
                                  for i, u in enumerate(conv)]))
            if len(out) == count:
                return out
    raise AssertionError(f"MELD dev has fewer than {count} dialogues of {min_len}..{max_len} utterances")


def register_calls(redis_url: str, call_ids: Iterable[str], ttl_s: int = 3600) -> None:
    """What the streamer does when it creates a call: set its call key (workers dead-letter
    utterances of calls without one, ``require_known_calls``)."""
    client = redis.Redis.from_url(redis_url)
    try:
        for call_id in call_ids:
            client.set(call_key(call_id), "1", ex=ttl_s)
    finally:
        client.close()


def as_inputs(events: Iterable[UtteranceEvent]) -> list[UtteranceInput]:
    return [UtteranceInput(e.utterance_id, e.speaker_id, text=e.text) for e in events]


def ended(call_id: str, events: list[UtteranceEvent]) -> CallEnded:
    return call_ended(call_id, len(events) - 1)


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


_ASSIGNED = re.compile(r'^cberl_worker_assigned_partitions\{partition="(\d+)"\} 1\.0$', re.M)


class WorkerProcess(ServiceProcess):
    """``python -m workers`` as a child service (single-threaded torch), output in ``data_dir``.

    It always serves ``/metrics`` (on :attr:`metrics_port`) and is ready once that page
    shows partitions of the utterances topic assigned to it
    (``cberl_worker_assigned_partitions``, set from faust's assignment signal).
    :meth:`start` waits for that.
    """

    def __init__(self, data_dir: Path, bootstrap: str, redis_url: str, topics: Topics, *extra: str,
                 name: str = "worker") -> None:
        self.metrics_port = free_port()
        args = ["--broker-bootstrap-servers", bootstrap, "--redis-url", redis_url,
                "--utterances-topic", topics.utterances, "--emotions-topic", topics.emotions,
                "--dead-letter-topic", topics.dead_letter, "--app-id", topics.app_id,
                "--partitions", "4", "--device", "cpu", "--metrics-port", str(self.metrics_port),
                # float32: labels are compared with batch inference to 1e-4, and bfloat16
                # rounds with each micro-batch's padding (tests/cberl_model/test_inference.py)
                "--encoder-precision", "float32", *extra]
        super().__init__(name, "workers", args, self.metrics_port, "/metrics", data_dir)

    def metrics(self) -> str:
        """The worker's ``/metrics`` page now."""
        with urllib.request.urlopen(f"http://{HOST}:{self.metrics_port}/metrics", timeout=5) as page:
            return page.read().decode()

    def assigned(self) -> set[int]:
        """The utterances-topic partitions the worker was given in its last rebalance."""
        return {int(p) for p in _ASSIGNED.findall(self.metrics())}

    def is_ready(self) -> bool:
        with contextlib.suppress(urllib.error.URLError, OSError):
            return bool(self.assigned())
        return False
