"""Per-call ordering: slots released in reservation order, seq gapless despite skips."""

from __future__ import annotations

import asyncio

import pytest

from contracts.events import CallEnded, UtteranceEvent
from streamer.sequencer import CallSequencer
from tests.factories import utterance


def _factory(name: str):
    def build(seq: int) -> UtteranceEvent:
        return utterance(seq, call_id="c", utterance_id=name, text=name)
    return build


@pytest.mark.asyncio
async def test_out_of_order_completion_publishes_in_order_without_gaps() -> None:
    published: list[UtteranceEvent | CallEnded] = []
    sequencer = CallSequencer("c", lambda e: published.append(e) or True)
    slots = [sequencer.reserve() for _ in range(4)]
    slots[2].set_result(_factory("third"))
    slots[1].set_result(None)  # discarded: no speech
    await asyncio.sleep(0)  # one turn of the loop for the done-callbacks: asserts nothing came out
    assert published == []  # the first is still being recognised
    slots[3].set_exception(RuntimeError("ASR failed"))
    slots[0].set_result(_factory("first"))
    await asyncio.wait_for(sequencer.drain(), 1.0)
    assert [(e.utterance_id, e.seq) for e in published] == [("first", 0), ("third", 1)]
    ended = sequencer.end()
    assert ended.last_seq == 1 and published[-1] == ended


@pytest.mark.asyncio
async def test_empty_call_ends_with_last_seq_minus_one() -> None:
    published: list[UtteranceEvent | CallEnded] = []
    sequencer = CallSequencer("c", lambda e: published.append(e) or True)
    await sequencer.drain()
    assert sequencer.end().last_seq == -1
