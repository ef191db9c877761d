"""Per-call ordering: utterances get a gapless ``seq`` in end-of-speech order.

Segments are recognised concurrently (two speakers, one ASR pool), so they may finish out
of order. Each endpointed segment reserves a slot at endpointing time; slots are released
strictly in reservation order, and ``seq`` is assigned only when a slot with an utterance
is released, so discarded segments (no speech) leave no hole.

A call restored after a restart of the streamer (:meth:`streamer.calls.CallStore.load`)
starts at the ``next_seq`` its store recorded: the seq after the last utterance the
broker acknowledged, so seqs stay gapless and unique across the restart (utterances that
were still in the dead process's backlog never reached the topic; their seqs are reused).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from pydantic import ValidationError

from contracts.events import CallEnded, UtteranceEvent

log = logging.getLogger(__name__)

EventFactory = Callable[[int], UtteranceEvent]
"""Builds the utterance event once its seq is known."""


class CallSequencer:
    """Slots in endpointing order; publishes each released utterance through ``publish``."""

    def __init__(self, call_id: str, publish: Callable[[UtteranceEvent | CallEnded], bool],
                 next_seq: int = 0) -> None:
        if next_seq < 0:
            raise ValueError(f"next_seq must be >= 0, not {next_seq}")
        self.call_id = call_id
        self._publish = publish
        self._slots: deque[asyncio.Future[EventFactory | None]] = deque()
        self._idle = asyncio.Event()
        self._idle.set()
        self.next_seq = next_seq

    def reserve(self) -> asyncio.Future[EventFactory | None]:
        """A slot for a segment just endpointed; resolve it with a factory, or ``None`` to skip."""
        slot: asyncio.Future[EventFactory | None] = asyncio.get_running_loop().create_future()
        slot.add_done_callback(lambda _: self._release())
        self._slots.append(slot)
        self._idle.clear()
        return slot

    def _release(self) -> None:
        while self._slots and self._slots[0].done():
            slot = self._slots.popleft()
            factory = None if slot.cancelled() or slot.exception() else slot.result()
            if factory is None:
                continue
            try:
                event = factory(self.next_seq)
            except ValidationError as exc:  # e.g. non-finite features: report, keep the call going
                log.error("call %s: dropped an utterance that breaks the contract: %s", self.call_id, exc)
                continue
            self._publish(event)
            self.next_seq += 1
        if not self._slots:
            self._idle.set()

    async def drain(self) -> None:
        """Wait until every reserved slot is released."""
        await self._idle.wait()

    def end(self) -> CallEnded:
        """Publish the call's end (after :meth:`drain`): ``last_seq`` is the last seq given out."""
        event = CallEnded(call_id=self.call_id, last_seq=self.next_seq - 1)
        self._publish(event)
        return event
