"""The subscription API (SSE and WebSocket over a real redis-server), the transcript fan-out
on publish (real tansu), the model card and the page's static files."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
import redis.asyncio as aioredis

from contracts.call_stream import EMOTION_FIELD, TRANSCRIPT_FIELD, call_stream_key
from contracts.events import EmotionEvent, TranscriptEntry
from streamer.gateway import PUBLISHER
from streamer.join import JoinError, add_participant, create_call
from streamer.tokens import issue_token, verify_token
from tests.factories import emotion, utterance
from tests.streamer.conftest import Gateway
from tests.waiting import async_wait_until

pytestmark = pytest.mark.asyncio(loop_scope="function")
LABELS = ("neutral", "joy")


def _emotion(call_id: str, revision: int, final: bool) -> EmotionEvent:
    return emotion(call_id=call_id, revision=revision, final=final)


async def _blocked_stream_readers(redis_url: str) -> int:
    """Redis clients blocked in a command now (the gateway's subscription readers in XREAD)."""
    client = aioredis.Redis.from_url(redis_url)
    clients = await client.client_list()
    await client.aclose()
    return sum(1 for c in clients if "b" in c["flags"] and c["cmd"] == "xread")


async def _fill(redis_url: str, call_id: str) -> list[str]:
    """A transcript, a junk entry, and two revisions of one label; returns the entry ids."""
    transcript = TranscriptEntry(call_id=call_id, utterance_id=f"{call_id}-u0", seq=0, speaker_id="p-a",
                                 speaker_name="Ann", start_ms=0, end_ms=900, text="what a day")
    client = aioredis.Redis.from_url(redis_url)
    key = call_stream_key(call_id)
    ids = [await client.xadd(key, {TRANSCRIPT_FIELD: transcript.model_dump_json()}),
           await client.xadd(key, {EMOTION_FIELD: b"{not json"}),
           await client.xadd(key, {EMOTION_FIELD: _emotion(call_id, 0, False).model_dump_json()}),
           await client.xadd(key, {EMOTION_FIELD: _emotion(call_id, 1, True).model_dump_json()})]
    await client.aclose()
    return [i.decode() for i in ids]


def _token(gateway: Gateway, call_id: str, ttl_s: int = 60) -> str:
    return issue_token(gateway.settings.secret(), call_id, "subscriber", ttl_s)


def _parse_sse(text: str) -> list[dict[str, str]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if fields:
            events.append(fields)
    return events


async def _sse(gateway: Gateway, call_id: str, query: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(
            f"{gateway.url}/v1/calls/{call_id}/emotions?{query}") as response:
        return response.status, await response.text()


async def test_sse_replays_the_call_in_order_and_skips_junk(gateway: Gateway, redis_server) -> None:
    ids = await _fill(redis_server.url, "call-sse")
    status, body = await _sse(gateway, "call-sse", f"token={_token(gateway, 'call-sse')}&follow=false")
    assert status == 200
    events = _parse_sse(body)
    assert [e["event"] for e in events] == ["utterance", "emotion", "emotion"]
    assert [e["id"] for e in events] == [ids[0], ids[2], ids[3]]
    assert json.loads(events[0]["data"])["text"] == "what a day"
    assert [json.loads(e["data"])["revision"] for e in events[1:]] == [0, 1]

    status, body = await _sse(gateway, "call-sse",
                              f"token={_token(gateway, 'call-sse')}&follow=false&from={ids[2]}")
    assert [e["id"] for e in _parse_sse(body)] == [ids[3]]
    status, body = await _sse(gateway, "call-sse",
                              f"token={_token(gateway, 'call-sse')}&follow=false&types=utterance")
    assert [e["event"] for e in _parse_sse(body)] == ["utterance"]


async def test_sse_delivers_live_events(gateway: Gateway, redis_server) -> None:
    token = _token(gateway, "call-live")
    readers = await _blocked_stream_readers(redis_server.url)
    async with aiohttp.ClientSession() as session, session.get(
            f"{gateway.url}/v1/calls/call-live/emotions?token={token}&from=$") as response:
        assert response.status == 200

        async def waiting() -> bool:  # "$" is resolved when the reader starts: fill once it waits
            return await _blocked_stream_readers(redis_server.url) > readers

        await async_wait_until(waiting, 10, message="the subscription never waited in XREAD")
        ids = await _fill(redis_server.url, "call-live")
        seen: list[str] = []
        async with asyncio.timeout(10):
            async for line in response.content:
                if line.startswith(b"id: "):
                    seen.append(line[4:].decode().strip())
                if len(seen) == 3:
                    break
    assert seen == [ids[0], ids[2], ids[3]]


async def test_websocket_replays_with_types(gateway: Gateway, redis_server) -> None:
    ids = await _fill(redis_server.url, "call-ws")
    token = _token(gateway, "call-ws")
    async with aiohttp.ClientSession() as session, session.ws_connect(
            f"{gateway.url}/v1/calls/call-ws/emotions?token={token}&follow=false") as ws:
        messages = [json.loads(m.data) async for m in ws if m.type == aiohttp.WSMsgType.TEXT]
    assert [(m["id"], m["type"]) for m in messages] == [
        (ids[0], "utterance"), (ids[2], "emotion"), (ids[3], "emotion")]
    assert messages[2]["data"]["final"] is True


async def test_bad_tokens_and_offsets_are_refused(gateway: Gateway) -> None:
    secret = gateway.settings.secret()
    cases = {
        "token=nope.nope": 401,
        f"token={issue_token(b'another secret', 'c1', 'subscriber', 60)}": 401,
        f"token={issue_token(secret, 'c1', 'subscriber', -1)}": 401,  # expired
        f"token={issue_token(secret, 'other-call', 'subscriber', 60)}": 403,
        "": 401,
        f"token={issue_token(secret, 'c1', 'subscriber', 60)}&from=yesterday": 400,
        f"token={issue_token(secret, 'c1', 'subscriber', 60)}&types=audio": 400,
    }
    for query, expected in cases.items():
        status, body = await _sse(gateway, "c1", query)
        assert status == expected, (query, body)
        assert "error" in json.loads(body)


async def test_published_utterances_reach_the_call_stream_without_features(
        gateway: Gateway, redis_server) -> None:
    event = utterance(call_id="call-pub", speaker_name="Ann", text="hello there",
                      features={"text": [0.5] * 384})
    assert gateway.app[PUBLISHER].publish(event)
    client = aioredis.Redis.from_url(redis_server.url)
    entries = await async_wait_until(lambda: client.xrange(call_stream_key("call-pub")), 20, interval_s=0.1,
                                     message="the transcript never reached the call stream")
    await client.aclose()
    assert len(entries) == 1
    stored = json.loads(entries[0][1][TRANSCRIPT_FIELD.encode()])
    assert stored["text"] == "hello there" and stored["speaker_name"] == "Ann"
    assert "features" not in stored


async def test_model_card_and_page(gateway: Gateway) -> None:
    status, card = await gateway.get("/v1/model")
    assert status == 200
    assert card["labels"][:2] == ["neutral", "joy"] and card["model_id"].startswith("cberl-")
    status, page = await gateway.get("/")
    assert status == 200 and "<title>CBERL live" in page
    status, script = await gateway.get("/static/app.js")
    assert status == 200 and "EventSource" in script


async def test_an_invite_token_mints_a_named_participant(gateway: Gateway) -> None:
    """``streamer.join --invite``: the invite token --create prints lets others join; the
    subscriber and participant tokens do not (H3: a read link is no participant credential)."""
    call = await create_call(gateway.url, ["ann"])
    minted = await add_participant(gateway.url, call["call_id"], "bob", call["invite_token"])
    claims = verify_token(gateway.settings.secret(), minted["token"], call["call_id"], "participant")
    assert claims.speaker_name == "bob" and claims.speaker_id == minted["speaker_id"]
    with pytest.raises(JoinError, match="HTTP 401: invalid token signature"):
        await add_participant(gateway.url, call["call_id"], "eve", "forged.token")
    with pytest.raises(JoinError, match="HTTP 403: token has role 'subscriber'; this needs 'invite'"):
        await add_participant(gateway.url, call["call_id"], "eve", call["subscriber_token"])
    with pytest.raises(JoinError, match="HTTP 403: token has role 'participant'; this needs 'invite'"):
        await add_participant(gateway.url, call["call_id"], "eve", call["participants"][0]["token"])
    status, body = await _sse(gateway, call["call_id"], f"token={call['invite_token']}&follow=false")
    assert (status, json.loads(body)["error"]) == (
        403, "token has role 'invite'; this needs 'participant' or 'subscriber'")


async def test_an_invite_mints_a_bounded_number_of_participants(gateway: Gateway) -> None:
    """A leaked invite link adds speakers to one call, but at most ``max_invites_per_call``;
    then 429 with the limit named, and other calls' invites still work."""
    limit = gateway.settings.max_invites_per_call
    call = await create_call(gateway.url, ["ann"])
    ids = {(await add_participant(gateway.url, call["call_id"], f"guest{i}",
                                  call["invite_token"]))["speaker_id"] for i in range(limit)}
    assert len(ids) == limit
    with pytest.raises(JoinError, match=f"HTTP 429: this call's invite has minted {limit} "
                                        f"participant tokens \\(at most {limit}\\)"):
        await add_participant(gateway.url, call["call_id"], "one-more", call["invite_token"])
    other = await create_call(gateway.url, ["bob"])
    assert (await add_participant(gateway.url, other["call_id"], "carol", other["invite_token"]))["token"]
