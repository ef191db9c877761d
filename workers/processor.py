"""One micro-batch of the utterances topic: parse, order, infer, publish, save.

The order of side effects is what makes delivery at-least-once without transactions
(tansu has none):

1. compute every update of the batch (one batched forward pass through the recognizer);
2. publish the Emotion events: the ``emotions`` topic (awaited until acknowledged) and
   each call's capped Redis stream;
3. save every call's state to Redis;
4. only then does faust ack the records, and commit their offsets later.

A crash before 3 redelivers the batch and recomputes the same events (same state, same
model): subscribers keep the highest revision, so the repeats are harmless. A crash after
3 redelivers records whose seqs the saved state already holds: they are ignored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from pydantic import ValidationError

from cberl_model.inference import EmotionRecognizer, FeatureError, LabelUpdate, UtteranceInput
from contracts.clock import now_ms
from contracts.events import CallEnded, EmotionEvent
from contracts.signing import SIGNATURE_HEADER, verify
from workers.dead_letter import DeadLetter, Incoming, Reason
from workers.messages import Utterance, parse_message
from workers.metrics import WorkerMetrics
from workers.sequencing import admit, skip_rejected
from workers.settings import WorkerSettings
from workers.state import CallRecord, CallStore, Emitted

log = logging.getLogger(__name__)


class EmotionSink(Protocol):
    """Where Emotion events and dead letters go (the faust topics, in the worker)."""

    async def publish(self, events: Sequence[Emitted]) -> None:
        """Send the events (serialised once) and return once the broker acknowledged them."""

    async def dead_letter(self, letters: Sequence[tuple[Incoming, DeadLetter]]) -> None:
        """Send the dead letters and return once acknowledged."""


@dataclass
class _Trigger:
    """What caused an update: its reference time for ``latency_ms``."""

    since_ms: int


@dataclass
class _CallWork:
    record: CallRecord
    ready: list[Utterance]
    finalize: bool
    closing_trigger: _Trigger | None = None


class BatchProcessor:
    """Turns micro-batches of raw ``utterances`` records into Emotion events.

    Args:
        recognizer: The loaded model (inference runs in a thread, off the event loop).
        store: Per-call state and call streams in Redis.
        sink: Where events and dead letters are published.
        settings: Gap, batching and admission settings (``event_secret``,
            ``require_known_calls``).
        metrics: The worker's metrics.
    """

    def __init__(self, recognizer: EmotionRecognizer, store: CallStore, sink: EmotionSink,
                 settings: WorkerSettings, metrics: WorkerMetrics) -> None:
        self.recognizer = recognizer
        self.store = store
        self.sink = sink
        self.settings = settings
        self.metrics = metrics
        self._secret = settings.event_key()
        self._active: dict[str, float] = {}  # call_id -> monotonic time last seen, for the gauge

    async def process(self, batch: Sequence[Incoming]) -> None:
        """Process one micro-batch to the end (publish and save); never raises on bad input.

        Every record ends up either processed or dead-lettered (with its reason).
        """
        letters: list[tuple[Incoming, DeadLetter]] = []

        def reject(record: Incoming, reason: Reason, why: str) -> None:
            letters.append((record, DeadLetter.of(record, reason, why)))

        parsed: list[tuple[Incoming, Utterance | CallEnded]] = []
        for record in batch:
            if self._secret is not None and (problem := self._signature_problem(record)):
                reject(record, *problem)
                continue
            try:
                message = parse_message(record.value)
            except (ValidationError, ValueError) as exc:
                reject(record, "invalid", _one_line(exc))
                continue
            parsed.append((record, message))
        if self.settings.require_known_calls and parsed:
            calls = sorted({m.call_id for _, m in parsed if isinstance(m, Utterance)})
            known = await self.store.known(calls)
            kept = []
            for record, message in parsed:
                if isinstance(message, Utterance) and message.call_id not in known:
                    reject(record, "unknown_call", f"call {message.call_id!r} was never created "
                                                   "(no call key in Redis)")
                else:
                    kept.append((record, message))
            parsed = kept
        by_call: dict[str, list[tuple[Incoming, Utterance | CallEnded]]] = defaultdict(list)
        for record, message in parsed:
            self.metrics.events.labels(kind=_kind(message)).inc()
            by_call[message.call_id].append((record, message))

        stored = await self.store.load(list(by_call))
        now = now_ms()
        work: dict[str, _CallWork] = {}
        origin: dict[int, Incoming] = {}
        for call_id, items in by_call.items():
            record = stored[call_id] or self._new_record(call_id, [m for _, m in items])
            admission = admit(record, [m for _, m in items], now, self.settings.gap_timeout_s,
                              self.settings.max_pending)
            self.metrics.gaps_skipped.inc(admission.skipped_count)
            origin.update((id(m), r) for r, m in items)
            for m, reason, why in admission.late:
                reject(origin[id(m)], reason, why)
            ended = next((m for _, m in items if isinstance(m, CallEnded)), None)
            work[call_id] = _CallWork(record, admission.ready, admission.finalize,
                                      _Trigger(ended.produced_at) if ended else _Trigger(now))

        vectors, rejected = await asyncio.to_thread(self._featurize, work)
        for utterance, error in rejected:
            skip_rejected(work[utterance.call_id].record, utterance.seq)
            reject(_origin_of(utterance, origin), "feature_error", error)
        updates = await asyncio.to_thread(self._infer, work, vectors)

        emitted_at = now_ms()
        events = self._events(updates, emitted_at)
        if letters:
            for _, letter in letters:
                self.metrics.dead_lettered.labels(reason=letter.reason).inc()
                log.warning("dead-lettered %s[%d]@%d: %s: %s", letter.topic, letter.partition,
                            letter.offset, letter.reason, letter.error)
            await self.sink.dead_letter(letters)
        await self.sink.publish(events)
        await self.store.append_emotions(events)
        await self.store.save((c, w.record) for c, w in work.items())
        self.metrics.emitted.inc(len(events))
        self._track_active(work)

    # -- steps ------------------------------------------------------------------------
    def _signature_problem(self, record: Incoming) -> tuple[Reason, str] | None:
        """``None`` when ``record`` is signed with ``event_secret``, else the reason."""
        assert self._secret is not None
        if verify(self._secret, record.key, record.value, record.headers):
            return None
        if any(k == SIGNATURE_HEADER for k, _ in record.headers):
            return "forged", f"the {SIGNATURE_HEADER} header does not match the record"
        return "unsigned", f"no {SIGNATURE_HEADER} header (event_secret is set)"

    def _new_record(self, call_id: str, messages: list[Utterance | CallEnded]) -> CallRecord:
        """A record for a call the store does not know: new, or its state was lost."""
        record = CallRecord(state=self.recognizer.open_call(call_id))
        seqs = [m.seq for m in messages if isinstance(m, Utterance)]
        first = min(seqs) if seqs else None
        ends = [m.last_seq for m in messages if isinstance(m, CallEnded)]
        if first is not None and first > 0 or first is None and ends and ends[0] >= 0:
            start = first if first is not None else ends[0] + 1
            self.metrics.state_lost.inc()
            log.error("call %s: no stored state but the call is under way (first seq here: %s); "
                      "state expired or Redis lost it: continuing with a fresh graph from seq %d, "
                      "earlier context is gone", call_id, first, start)
            record.next_seq = start
        return record

    def _featurize(self, work: dict[str, _CallWork]
                   ) -> tuple[dict[int, dict[str, np.ndarray]], list[tuple[Utterance, str]]]:
        """The model's vectors of every ready utterance (validated and, where the event has no
        text vector, encoded), once; the ones that do not fit are taken out of ``ready``.

        Returns the vectors by ``id(utterance)`` and the rejected utterances with the error.
        """
        ready = [u for w in work.values() for u in w.ready]
        raw = [UtteranceInput(u.utterance_id, u.event.speaker_id, text=u.event.text,
                              features=dict(u.vectors)) for u in ready]
        try:
            vectors: list[dict[str, np.ndarray] | None] = list(self.recognizer.featurize(raw))
            errors: dict[int, str] = {}
        except FeatureError:  # find the culprits one by one (rare)
            vectors, errors = [], {}
            for i, item in enumerate(raw):
                try:
                    vectors.append(self.recognizer.featurize([item])[0])
                except FeatureError as exc:
                    vectors.append(None)
                    errors[i] = str(exc)
        rejected = [(u, errors[i]) for i, u in enumerate(ready) if vectors[i] is None]
        for u, _ in rejected:
            work[u.call_id].ready.remove(u)
        return {id(u): v for u, v in zip(ready, vectors, strict=True) if v is not None}, rejected

    def _infer(self, work: dict[str, _CallWork], vectors: dict[int, dict[str, np.ndarray]]
               ) -> list[tuple[str, LabelUpdate, int, int]]:
        """One batched forward pass over every call's new utterances, then the call ends.

        Returns ``(call_id, update, seq, since_ms)`` per update, in emission order.
        """
        ready = [(w.record.state, u) for w in work.values() for u in w.ready]
        items = [(state, UtteranceInput(u.utterance_id, u.event.speaker_id, seq=u.seq))
                 for state, u in ready]
        if items:
            self.metrics.batch_size.observe(len(items))
        results = self.recognizer.add_utterances(items, [vectors[id(u)] for _, u in ready])
        per_call = defaultdict(list)
        for state, updates in results:
            per_call[state.call_id].append((state, updates))
        out: list[tuple[str, LabelUpdate, int, int]] = []
        for call_id, w in work.items():
            for (state, updates), u in zip(per_call[call_id], w.ready, strict=True):
                w.record.state = state
                event = u.event
                since = event.end_of_speech_at if event.end_of_speech_at is not None else event.produced_at
                out.extend((call_id, x, x.seq, since) for x in updates)
            if w.finalize:
                w.record.state, final_updates = self.recognizer.end_call(w.record.state)
                assert w.closing_trigger is not None
                out.extend((call_id, x, x.seq, w.closing_trigger.since_ms) for x in final_updates)
        return out

    def _events(self, updates: list[tuple[str, LabelUpdate, int, int]], emitted_at: int
                ) -> list[Emitted]:
        """The Emotion events, each serialised once (Kafka and the call stream share the bytes)."""
        events = []
        for call_id, u, seq, since_ms in updates:
            latency_ms = float(emitted_at - since_ms)
            self.metrics.latency.observe(max(latency_ms, 0.0) / 1000)
            event = EmotionEvent(
                call_id=call_id, utterance_id=u.utterance_id, seq=seq, speaker_id=u.speaker_id,
                label=u.label, scores=u.scores, revision=u.revision, final=u.final,
                model_id=self.recognizer.model_id, latency_ms=latency_ms, emitted_at=emitted_at)
            events.append(Emitted(call_id, event.model_dump_json().encode()))
        return events

    def _track_active(self, work: dict[str, _CallWork]) -> None:
        now = time.monotonic()
        for call_id, w in work.items():
            if w.record.state.ended:
                self._active.pop(call_id, None)
            else:
                self._active[call_id] = now
        horizon = now - self.settings.call_stream_ttl_s
        self._active = {c: t for c, t in self._active.items() if t >= horizon}
        self.metrics.active_calls.set(len(self._active))


def _kind(message: Utterance | CallEnded) -> str:
    return "utterance" if isinstance(message, Utterance) else message.type


def _origin_of(utterance: Utterance, origin: dict[int, Incoming]) -> Incoming:
    """The record an utterance came from (this batch, or a held one: no offset then)."""
    found = origin.get(id(utterance))
    if found is not None:
        return found
    return Incoming(value=utterance.event.model_dump_json().encode(), key=utterance.call_id.encode(),
                    topic="(held early utterance)", partition=-1, offset=-1)


def _one_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: " + " | ".join(str(exc).splitlines())
