"""Calls over real WebRTC on 127.0.0.1 into a real tansu broker, with espeak-ng speech."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from cberl_model.artifact import DEFAULT_MODEL_DIR
from contracts.call_stream import call_stream_key
from contracts.events import EmotionEvent
from deploy.speech import timeline_wav, word_error_rate
from streamer.join import join_call
from tests.factories import emotion
from tests.kafka import read_call
from tests.streamer.conftest import Gateway
from tests.waiting import async_wait_until


def default_text_dim() -> int:
    """The width of the text vectors the bundled model reads (its card, no model loaded)."""
    card = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())
    return int(card["architecture"]["input_dims"]["text"])

ALICE = [(1.0, "Can you send me the report before the meeting tomorrow?"),
         (8.5, "I am really happy that you called me this morning.")]
BOB = [(4.8, "Do you want to have dinner with us tonight?"),
       (12.0, "Thank you for helping me with my homework.")]
CALL_S = 15.5


async def _offsets(gateway: Gateway, call_id: str, token: str, n: int) -> dict[str, int]:
    """Each participant's media offset on the call timeline, once all ``n`` are streaming."""
    seen: list[object] = [None]

    async def streaming() -> dict[str, int] | None:
        status, body = await gateway.get(f"/v1/calls/{call_id}", token)
        assert status == 200, body
        seen[0] = body
        offsets = {p["name"]: p["media_offset_ms"] for p in body["participants"]}
        return offsets if len(offsets) == n and None not in offsets.values() else None

    return await async_wait_until(streaming, 10, interval_s=0.1,
                                  message=lambda: f"participants never started streaming: {seen[0]}")


@pytest.mark.asyncio
async def test_two_participants_ordered_attributed_transcribed(gateway: Gateway, tmp_path: Path) -> None:
    spoken = {"alice": timeline_wav(tmp_path / "alice.wav", ALICE, CALL_S, tmp_path),
              "bob": timeline_wav(tmp_path / "bob.wav", BOB, CALL_S, tmp_path)}
    status, call = await gateway.post("/v1/calls", {"participants": ["alice", "bob"]})
    assert status == 201, call
    call_id, tokens = call["call_id"], {p["name"]: p["token"] for p in call["participants"]}
    joins = [asyncio.create_task(join_call(gateway.url, call_id, tokens[name], tmp_path / f"{name}.wav",
                                           grace_s=1.0)) for name in ("alice", "bob")]
    offsets = await _offsets(gateway, call_id, call["subscriber_token"], 2)
    await asyncio.gather(*joins)
    status, refused = await gateway.post(f"/v1/calls/{call_id}/end", {"token": call["subscriber_token"]})
    assert status == 403, refused  # subscribers read; only participants end a call
    status, ended = await gateway.post(f"/v1/calls/{call_id}/end", {"token": tokens["alice"]})
    assert status == 200, ended

    utterances, call_ended = await read_call(gateway.settings.broker_bootstrap_servers, call_id)
    assert call_ended is not None and call_ended.last_seq == len(utterances) - 1 == ended["last_seq"]
    assert [u.seq for u in utterances] == list(range(4))
    truth = sorted(((s.end_ms + offsets[name], name, s) for name, said in spoken.items() for s in said),
                   key=lambda t: t[0])
    assert [u.speaker_name for u in utterances] == [name for _, name, _ in truth]
    ids = {p["name"]: p["speaker_id"] for p in call["participants"]}
    for u, (_, name, said) in zip(utterances, truth, strict=True):
        assert u.speaker_id == ids[name]
        assert word_error_rate(said.text, u.text) <= 0.10, (said.text, u.text)
        assert abs(u.end_ms - offsets[name] - said.end_ms) <= 300, (u.end_ms, offsets[name], said)
        assert u.start_ms <= u.end_ms and u.features.text is not None
        assert len(u.features.text) == default_text_dim()
        assert u.end_of_speech_at is not None and u.end_of_speech_at <= u.produced_at


@pytest.mark.asyncio
async def test_hangup_mid_sentence_flushes_partial_utterance(gateway: Gateway, tmp_path: Path) -> None:
    sentence = "Can you send me the report before the meeting tomorrow?"
    said = timeline_wav(tmp_path / "carol.wav", [(0.5, sentence)], 5.0, tmp_path)[0]
    hangup_s = (said.start_ms + (said.end_ms - said.start_ms) * 0.6) / 1000
    status, call = await gateway.post("/v1/calls", {"participants": ["carol"]})
    assert status == 201
    await join_call(gateway.url, call["call_id"], call["participants"][0]["token"], tmp_path / "carol.wav",
                    hangup_after_s=hangup_s)
    # the server sees the hang-up (RTCP BYE), flushes, transcribes: the transcript reaches the call stream
    redis = aioredis.Redis.from_url(str(gateway.settings.redis_url))
    await async_wait_until(lambda: redis.xlen(call_stream_key(call["call_id"])), 30,
                           message="the flushed utterance never reached the call stream")
    await redis.aclose()
    status, ended = await gateway.post(f"/v1/calls/{call['call_id']}/end",
                                       {"token": call["participants"][0]["token"]})
    assert status == 200 and ended["last_seq"] == 0, ended
    utterances, _ = await read_call(gateway.settings.broker_bootstrap_servers, call["call_id"])
    assert len(utterances) == 1
    heard = utterances[0]
    assert heard.text and word_error_rate(sentence, heard.text) < 1.0
    assert heard.end_ms < said.end_ms, "the flushed utterance must end at the hang-up, not later"
    assert heard.start_ms <= said.start_ms + 300


@pytest.mark.asyncio
async def test_emotion_events_reach_the_data_channel(gateway: Gateway, tmp_path: Path) -> None:
    timeline_wav(tmp_path / "dave.wav", [], 4.0, tmp_path)
    status, call = await gateway.post("/v1/calls", {"participants": ["dave"]})
    assert status == 201
    call_id = call["call_id"]
    event = emotion(call_id=call_id, latency_ms=120.0)
    redis = aioredis.Redis.from_url(str(gateway.settings.redis_url))
    received: list[dict] = []
    join = asyncio.create_task(join_call(gateway.url, call_id, call["participants"][0]["token"],
                                         tmp_path / "dave.wav", grace_s=0.5, on_event=received.append))
    await _offsets(gateway, call_id, call["subscriber_token"], 1)  # dave is in the call, streaming
    await redis.xadd(call_stream_key(call_id), {"event": event.model_dump_json()})
    await redis.xadd(call_stream_key(call_id), {"event": json.dumps({"not": "an event"})})
    await join
    await redis.aclose()
    assert [EmotionEvent.model_validate(e) for e in received] == [event]
