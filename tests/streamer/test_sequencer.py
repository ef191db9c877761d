"""Per-call ordering: slots released in reservation order, seq gapless despite skips."""

from __future__ import annotations

import asyncio

import pytest

from contracts.events import CallEnded, UtteranceEvent
from streamer.sequencer import CallSequencer
from tests.factories import utterance


def _factory(name: str, call_id: str = "c"):
    def build(seq: int) -> UtteranceEvent:
        return utterance(seq, call_id=call_id, utterance_id=name, text=name)
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


@pytest.mark.asyncio
async def test_a_restored_call_continues_at_the_acked_seq_with_its_timeline(redis_server) -> None:
    import redis.asyncio as aioredis

    from streamer.calls import CallRegistry, CallStore, live_call_key, new_call
    from streamer.metrics import StreamerMetrics

    client = aioredis.Redis.from_url(redis_server.url)
    store = CallStore(client, ttl_s=100)
    published: list[UtteranceEvent | CallEnded] = []
    call = new_call("c-restore", lambda e: published.append(e) or True, store)
    await store.created(call)
    call.media_offset_ms(1_000_000)
    for name in ("a", "b", "c"):
        call.sequencer.reserve().set_result(_factory(name, "c-restore"))
    await asyncio.wait_for(call.sequencer.drain(), 1.0)
    for event in published[:2]:  # the broker acked two; the third died in the backlog
        store.published(event)
    await store.drain()

    # a new process: the call comes back with the seq after the last acked one
    registry = CallRegistry(StreamerMetrics())
    again: list[UtteranceEvent | CallEnded] = []
    registry_store = CallStore(client, 100)
    restored = await registry.restore("c-restore", registry_store, lambda e: again.append(e) or True)
    assert restored is not None and restored.sequencer.next_seq == 2 and restored.t0_ms == 1_000_000
    assert registry.get("c-restore") is restored
    assert await registry.restore("c-unknown", store, again.append) is None

    restored.sequencer.reserve().set_result(_factory("d", "c-restore"))
    await asyncio.wait_for(restored.sequencer.drain(), 1.0)
    assert [(e.utterance_id, e.seq) for e in again] == [("d", 2)]
    await registry.end(restored)
    assert isinstance(again[-1], CallEnded) and again[-1].last_seq == 2
    await registry_store.drain()
    assert await client.exists(live_call_key("c-restore")) == 0  # ended: not restorable
    await client.aclose()
