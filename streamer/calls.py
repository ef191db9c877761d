"""The registry of live calls: who is in each, its sequencer and its media timeline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiortc import RTCPeerConnection

from contracts.clock import now_ms
from contracts.events import CallEnded
from streamer.metrics import StreamerMetrics
from streamer.pipeline import ParticipantPipeline
from streamer.sequencer import CallSequencer

log = logging.getLogger(__name__)


@dataclass
class Participant:
    """One live connection of one participant."""

    pipeline: ParticipantPipeline
    pc: RTCPeerConnection
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class Call:
    """One call: its participants, its ordering of utterances and its media clock.

    The call timeline starts at the first audio frame received from anyone; each
    participant's ``offset_ms`` is where their own first frame falls on it, so the
    ``start_ms``/``end_ms`` of everyone's utterances share one clock.
    """

    def __init__(self, call_id: str, sequencer: CallSequencer) -> None:
        self.call_id = call_id
        self.sequencer = sequencer
        self.created_at_ms = now_ms()
        self.participants: dict[str, Participant] = {}
        self.ended = False
        self._t0_ms: int | None = None

    def media_offset_ms(self, first_frame_ms: int) -> int:
        """A participant's offset on the call timeline, given their first frame's arrival."""
        if self._t0_ms is None:
            self._t0_ms = first_frame_ms
        return max(first_frame_ms - self._t0_ms, 0)

    async def remove(self, speaker_id: str) -> bool:
        """Hang up one participant: close the connection, flush and recognise their speech."""
        participant = self.participants.pop(speaker_id, None)
        if participant is None:
            return False
        await participant.pc.close()
        await participant.pipeline.close()
        for task in participant.tasks:
            task.cancel()
        return True

    def describe(self) -> dict[str, object]:
        """The call's public state (``GET /v1/calls/{id}``)."""
        return {"call_id": self.call_id, "created_at": self.created_at_ms, "ended": self.ended,
                "next_seq": self.sequencer.next_seq,
                "participants": [{"speaker_id": pid, "name": p.pipeline.speaker.name,
                                  "media_offset_ms": p.pipeline.offset_ms}
                                 for pid, p in self.participants.items()]}


class CallRegistry:
    """Every call of this process, by id."""

    def __init__(self, metrics: StreamerMetrics) -> None:
        self._calls: dict[str, Call] = {}
        self._metrics = metrics

    def add(self, call: Call) -> Call:
        self._calls[call.call_id] = call
        self._metrics.active_calls.set(len(self._calls))
        return call

    def get(self, call_id: str) -> Call | None:
        return self._calls.get(call_id)

    def __iter__(self) -> Iterator[Call]:
        return iter(list(self._calls.values()))

    async def end(self, call: Call, timeout_s: float = 30.0) -> CallEnded:
        """Hang everyone up, wait for their last utterances, publish ``CallEnded``, forget it."""
        call.ended = True
        self._calls.pop(call.call_id, None)
        self._metrics.active_calls.set(len(self._calls))
        for pid in list(call.participants):
            await call.remove(pid)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(call.sequencer.drain(), timeout_s)
        return call.sequencer.end()


def new_call_id() -> str:
    """An unguessable call id (URL-safe)."""
    return "c-" + secrets.token_urlsafe(9)
