"""Bad input at a real gateway (127.0.0.1, real tansu and redis-server): every case gets its
exact status and message, never a 500, and nothing is registered by a refused request
(issue #14: the outside probe's findings)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiortc import RTCPeerConnection
from yarl import URL

from contracts.call_stream import call_key
from streamer.gateway import CALLS, LIMITER, METRICS, PUBLISHER, REDIS, SUB_REDIS
from streamer.settings import StreamerSettings
from streamer.subscriptions import WS_TOKEN_EXPIRED
from streamer.tokens import issue_token
from tests.kafka import read_call
from tests.streamer.conftest import Gateway, gateway_settings, run_gateway
from tests.waiting import async_wait_until

pytestmark = pytest.mark.asyncio(loop_scope="function")

JSON = {"Content-Type": "application/json"}
OFFSER_ERROR = "'from' must be 0, $ or a stream entry id like 1700000000000-0, not "


@dataclass
class Ctx:
    """A call made for the cases, with its tokens and a genuine offer."""

    gateway: Gateway
    call_id: str
    participant: str
    subscriber: str
    invite: str
    offer: str

    def token(self, role: str, ttl_s: int = 60, call_id: str | None = None) -> str:
        extra = {"speaker_id": "p-x", "speaker_name": "x"} if role == "participant" else {}
        return issue_token(self.gateway.settings.secret(), call_id or self.call_id, role, ttl_s, **extra)


async def _offer() -> str:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def _fingerprint(sdp: str, value: str) -> str:
    return re.sub(r"a=fingerprint:[^\r\n]*", f"a=fingerprint:{value}", sdp)


def _with_fingerprint(value: str) -> Callable[[Ctx], dict[str, str]]:
    return lambda c: {"sdp": _fingerprint(c.offer, value), "type": "offer", "token": c.participant}


@pytest_asyncio.fixture
async def ctx(gateway: Gateway) -> Ctx:
    status, call = await gateway.post("/v1/calls", {"participants": ["mallory"]})
    assert status == 201, call
    return Ctx(gateway, call["call_id"], call["participants"][0]["token"], call["subscriber_token"],
               call["invite_token"], await _offer())


Request = tuple[str, str, dict[str, str], bytes | None]
"""method, path (already percent-encoded), headers, body."""


def post(path: str, body: object = None, raw: bytes | None = None,
         headers: dict[str, str] | None = None) -> Callable[[Ctx], Request]:
    """A POST case; ``path`` and ``body`` may be callables of the context."""
    def build(c: Ctx) -> Request:
        p = path(c) if callable(path) else path
        data = raw if raw is not None else json.dumps(body(c) if callable(body) else body).encode()
        return "POST", p, headers if headers is not None else JSON, data
    return build


def get(path: Callable[[Ctx], str] | str, headers: Callable[[Ctx], dict[str, str]] | None = None
        ) -> Callable[[Ctx], Request]:
    def build(c: Ctx) -> Request:
        return "GET", path(c) if callable(path) else path, headers(c) if headers else {}, None
    return build


def _join(c: Ctx) -> str:
    return f"/v1/calls/{c.call_id}/join"


def _emotions(query: Callable[[Ctx], str]) -> Callable[[Ctx], str]:
    return lambda c: f"/v1/calls/{c.call_id}/emotions?{query(c)}"


NAME_RULE = "a participant name must be a non-empty string of at most 64 characters, not "
CASES: list[tuple[str, Callable[[Ctx], Request], int, str | Callable[[Ctx], str]]] = [
    # -- names (H1, H6): valid Unicode, no control characters --------------------------
    ("lone-surrogate-name", post("/v1/calls", raw=b'{"participants": ["x\\ud800y"]}'), 400,
     "a participant name must be plain text: it holds a lone surrogate U+D800 at position 1 "
     "(not valid Unicode)"),
    ("crlf-name", post("/v1/calls", {"participants": ["eve\r\nINFO forged"]}), 400,
     "a participant name must be plain text: it holds a control character U+000D at position 3"),
    ("nul-name", post("/v1/calls", {"participants": ["a\x00b"]}), 400,
     "a participant name must be plain text: it holds a control character U+0000 at position 1"),
    ("line-separator-name", post("/v1/calls", {"participants": ["a\u2028b"]}), 400,
     "a participant name must be plain text: it holds a control character U+2028 at position 1"),
    ("bidi-override-name", post("/v1/calls", {"participants": ["\u202eevil"]}), 400,
     "a participant name must be plain text: it holds a control character U+202E at position 0"),
    ("empty-name", post("/v1/calls", {"participants": ["  "]}), 400, NAME_RULE + "'  '"),
    ("long-name", post("/v1/calls", {"participants": ["x" * 65]}), 400, NAME_RULE + repr("x" * 65)),
    ("number-name", post("/v1/calls", {"participants": [5]}), 400, NAME_RULE + "5"),
    ("invited-crlf-name", post(lambda c: f"/v1/calls/{c.call_id}/participants",
                               lambda c: {"name": "a\nb", "token": c.invite}), 400,
     "a participant name must be plain text: it holds a control character U+000A at position 1"),
    # -- call creation limits (H5) ----------------------------------------------------
    ("names-not-a-list", post("/v1/calls", {"participants": "mallory"}), 400,
     "'participants' must be a list of names"),
    ("too-many-names", post("/v1/calls", {"participants": [f"n{i}" for i in range(20_000)]}), 400,
     "too many participant names: 20000; at most 16 per request"),
    # -- bodies: JSON objects only ----------------------------------------------------
    ("deep-json", post("/v1/calls", raw=b"[" * 100_000 + b"]" * 100_000), 400,
     "the request body must be JSON: nested too deeply"),
    ("text-plain", post("/v1/calls", raw=b"{}", headers={"Content-Type": "text/plain"}), 415,
     "the request body must be application/json, not 'text/plain'"),
    ("form-body", post("/v1/calls", raw=b"participants=a",
                       headers={"Content-Type": "application/x-www-form-urlencoded"}), 415,
     "the request body must be application/json, not 'application/x-www-form-urlencoded'"),
    ("not-json", post("/v1/calls", raw=b"{not json"), 400,
     "the request body must be JSON: Expecting property name enclosed in double quotes: "
     "line 1 column 2 (char 1)"),
    ("not-utf8", post("/v1/calls", raw=b"\xff{}"), 400,
     "the request body must be JSON: 'utf-8' codec can't decode byte 0xff in position 0: "
     "invalid start byte"),
    ("json-array", post("/v1/calls", raw=b"[]"), 400, "the request body must be a JSON object"),
    # -- tokens: 401/403, never 500 ---------------------------------------------------
    ("non-ascii-token", post(_join, lambda c: {"sdp": c.offer, "type": "offer", "token": "é.é"}), 401,
     "malformed token: expected PAYLOAD.SIGNATURE in ASCII"),
    ("non-ascii-bearer", get(lambda c: f"/v1/calls/{c.call_id}",
                             lambda c: {"Authorization": "Bearer \u00e9\u00e9.\u00e9"}), 401,
     "malformed token: expected PAYLOAD.SIGNATURE in ASCII"),
    ("non-ascii-query-token", get(_emotions(lambda c: "token=%C3%A9.%C3%A9")), 401,
     "malformed token: expected PAYLOAD.SIGNATURE in ASCII"),
    ("garbage-token", post(_join, lambda c: {"sdp": c.offer, "type": "offer", "token": "garbage"}), 401,
     "malformed token: expected PAYLOAD.SIGNATURE"),
    ("invite-joins", post(_join, lambda c: {"sdp": c.offer, "type": "offer", "token": c.invite}), 403,
     "token has role 'invite'; this needs 'participant'"),
    ("subscriber-invites", post(lambda c: f"/v1/calls/{c.call_id}/participants",
                                lambda c: {"name": "bob", "token": c.subscriber}), 403,
     "token has role 'subscriber'; this needs 'invite'"),
    ("participant-invites", post(lambda c: f"/v1/calls/{c.call_id}/participants",
                                 lambda c: {"name": "bob", "token": c.participant}), 403,
     "token has role 'participant'; this needs 'invite'"),
    ("invite-reads", get(lambda c: f"/v1/calls/{c.call_id}",
                         lambda c: {"Authorization": f"Bearer {c.invite}"}), 403,
     "token has role 'invite'; this needs 'participant' or 'subscriber'"),
    ("invite-ends", post(lambda c: f"/v1/calls/{c.call_id}/end", lambda c: {"token": c.invite}), 403,
     "token has role 'invite'; this needs 'participant'"),
    ("expired-stream-token", get(_emotions(lambda c: f"token={c.token('subscriber', -1)}")), 401,
     "token expired"),
    ("other-call-invite", post(lambda c: f"/v1/calls/{c.call_id}/participants",
                               lambda c: {"name": "bob", "token": c.token("invite", call_id="c-other")}),
     403, lambda c: f"token is for another call, not {c.call_id!r}"),
    # -- stream offsets: ASCII digits that fit a stream id -----------------------------
    ("unicode-digits", get(_emotions(lambda c: f"token={c.subscriber}&from=%D9%A1%D9%A2%D9%A3")), 400,
     OFFSER_ERROR + "'١٢٣'"),
    ("huge-offset", get(_emotions(lambda c: f"token={c.subscriber}&from={'9' * 30}")), 400,
     OFFSER_ERROR + repr("9" * 30)),
    ("offset-over-64-bits", get(_emotions(lambda c: f"token={c.subscriber}&from=18446744073709551616-0")),
     400, OFFSER_ERROR + "'18446744073709551616-0'"),
    ("seq-over-64-bits", get(_emotions(lambda c: f"token={c.subscriber}&from=1-99999999999999999999")),
     400, OFFSER_ERROR + "'1-99999999999999999999'"),
    ("unknown-types", get(_emotions(lambda c: f"token={c.subscriber}&types=audio")), 400,
     "'types' must name utterance and/or emotion, not 'audio'"),
    # -- offers: a DTLS fingerprint must be a real digest ------------------------------
    ("bogus-fingerprint", post(_join, _with_fingerprint("sha-256 ZZ:ZZ")), 400,
     "the audio m-line has a malformed sha-256 DTLS fingerprint: expected 32 colon-separated hex "
     "bytes, not 'ZZ:ZZ'"),
    ("short-fingerprint", post(_join, _with_fingerprint("sha-256 " + ":".join(["AB"] * 31))), 400,
     "the audio m-line has a malformed sha-256 DTLS fingerprint: expected 32 colon-separated hex "
     f"bytes, not {':'.join(['AB'] * 31)[:40]!r}"),
    ("md5-fingerprint", post(_join, _with_fingerprint("md5 " + ":".join(["AB"] * 16))), 400,
     "the audio m-line has a DTLS fingerprint of unsupported hash 'md5' (supported: sha-256, "
     "sha-384, sha-512)"),
    ("non-ascii-sdp", post(_join, lambda c: {"sdp": c.offer + "a=x:\u00e9\r\n", "type": "offer",
                                             "token": c.participant}), 400,
     "malformed SDP: it must be ASCII"),
    ("type-not-a-string", post(_join, lambda c: {"sdp": c.offer, "type": ["offer"], "token": c.participant}),
     400, "'type' must be 'offer', not a list"),
    # -- Host header (DNS rebinding), on every kind of route --------------------------
    *[(f"foreign-host-{name}", get(path, lambda c: {"Host": "evil.example"}), 421,
       lambda c: "this gateway does not serve host 'evil.example' (allowed: "
                 + ", ".join(sorted(f"{h}:{c.gateway.settings.port}"
                                    for h in ("127.0.0.1", "localhost", "[::1]"))) + ")")
      for name, path in [("metrics", "/metrics"), ("page", "/"), ("model", "/v1/model"),
                         ("stream", _emotions(lambda c: f"token={c.subscriber}"))]],
    # -- paths ------------------------------------------------------------------------
    ("static-traversal", get("/static/%2e%2e/gateway.py"), 404, "Not Found"),
    ("static-traversal-encoded-slash", get("/static/..%2fsettings.py"), 404, "Not Found"),
    ("crlf-path", get("/v1/calls/c-x%0d%0aINFO%20forged"), 404,
     "unknown call 'c-x\\r\\nINFO forged' (never created, or already ended)"),
]


@pytest.mark.parametrize(("build", "status", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_bad_input_gets_its_exact_error(ctx: Ctx, build, status: int, message) -> None:
    method, path, headers, data = build(ctx)
    calls_before = len(ctx.gateway.app[CALLS])
    async with aiohttp.ClientSession() as session, session.request(
            method, URL(ctx.gateway.url + path, encoded=True), headers=headers, data=data) as response:
        body = await response.json(content_type=None)
    expected = message(ctx) if callable(message) else message
    assert (response.status, body) == (status, {"error": expected})
    assert len(ctx.gateway.app[CALLS]) == calls_before, "a refused request registered a call"


async def test_a_refused_creation_registers_nothing(ctx: Ctx) -> None:
    """The last name is bad: no call is left behind (checked before registering)."""
    before = set(c.call_id for c in ctx.gateway.app[CALLS])
    status, body = await ctx.gateway.post("/v1/calls", {"participants": ["ann", "bob", ""]})
    assert (status, body) == (400, {"error": NAME_RULE + "''"})
    assert set(c.call_id for c in ctx.gateway.app[CALLS]) == before


# -- limits and lifetimes, each on a gateway with small settings ------------------------

def _settings(tansu_broker, redis_server, **overrides: object) -> StreamerSettings:
    return gateway_settings(tansu_broker, redis_server, **overrides)


async def _status(session: aiohttp.ClientSession, method: str, url: str, **kwargs: object
                  ) -> tuple[int, dict, dict[str, str]]:
    async with session.request(method, url, **kwargs) as response:
        return response.status, await response.json(content_type=None), dict(response.headers)


async def test_api_key_guards_call_creation(tansu_broker, redis_server, analyzer) -> None:
    settings = _settings(tansu_broker, redis_server, api_key="k-secret-1")
    async with run_gateway(settings, analyzer) as gw, aiohttp.ClientSession() as session:
        url = gw.url + "/v1/calls"
        status, body, _ = await _status(session, "POST", url, json={})
        assert (status, body) == (401, {"error": "creating a call needs the API key ('Authorization: "
                                                  "Bearer <key>' or 'X-API-Key: <key>')"})
        status, body, _ = await _status(session, "POST", url, json={}, headers={"X-API-Key": "wrong"})
        assert (status, body) == (401, {"error": "invalid API key"})
        status, body, _ = await _status(session, "POST", url, json={},
                                        headers={"Authorization": "Bearer k-secret-\u00e9"})
        assert (status, body) == (401, {"error": "invalid API key"})
        assert len(gw.app[CALLS]) == 0
        for headers in ({"X-API-Key": "k-secret-1"}, {"Authorization": "Bearer k-secret-1"}):
            status, body, _ = await _status(session, "POST", url, json={}, headers=headers)
            assert status == 201 and set(body) == {"call_id", "participants", "subscriber_token",
                                                   "invite_token"}


async def test_calls_and_participants_are_capped(tansu_broker, redis_server, analyzer) -> None:
    settings = _settings(tansu_broker, redis_server, max_active_calls=2, max_participants_per_call=1)
    async with run_gateway(settings, analyzer) as gw, aiohttp.ClientSession() as session:
        url = gw.url + "/v1/calls"
        status, call, _ = await _status(session, "POST", url, json={"participants": ["ann"]})
        assert status == 201
        status, body, _ = await _status(session, "POST", url, json={"participants": ["ann", "bob"]})
        assert (status, body) == (400, {"error": "too many participants: 2; a call has at most 1"})
        assert (await _status(session, "POST", url, json={}))[0] == 201
        status, body, headers = await _status(session, "POST", url, json={})
        assert (status, body, headers["Retry-After"]) == (
            503, {"error": "at capacity: 2 active calls (at most 2); retry later"}, "30")
        assert len(gw.app[CALLS]) == 2

        join = f"{gw.url}/v1/calls/{call['call_id']}/join"
        status, answer, _ = await _status(session, "POST", join, json={
            "sdp": await _offer(), "type": "offer", "token": call["participants"][0]["token"]})
        assert status == 200, answer
        status, bob, _ = await _status(session, "POST", f"{gw.url}/v1/calls/{call['call_id']}/participants",
                                       json={"name": "bob", "token": call["invite_token"]})
        status, body, headers = await _status(session, "POST", join, json={
            "sdp": await _offer(), "type": "offer", "token": bob["token"]})
        assert (status, body, headers["Retry-After"]) == (
            503, {"error": "the call is full: 1 participants (at most 1); retry later"}, "30")



def _participants_gauge(gw: Gateway) -> float | None:
    return gw.app[METRICS].registry.get_sample_value("streamer_active_participants")


async def test_subscriptions_are_capped_and_read_on_their_own_pool(
        tansu_broker, redis_server, analyzer) -> None:
    """H2: streams of one call cannot take the write path's Redis connections."""
    settings = _settings(tansu_broker, redis_server, max_subscriptions_per_call=2,
                         max_subscriptions_per_client=4, max_subscriptions=10)
    async with run_gateway(settings, analyzer) as gw, aiohttp.ClientSession() as session:
        assert gw.app[SUB_REDIS].connection_pool is not gw.app[REDIS].connection_pool
        await async_wait_until(lambda: gw.app[PUBLISHER].ready, 30, message="the broker never connected")
        token = {c: issue_token(settings.secret(), c, "subscriber", 60) for c in ("ca", "cb", "cc", "cd")}
        url = lambda c, q="": f"{gw.url}/v1/calls/{c}/emotions?token={token[c]}{q}"  # noqa: E731
        held = [await session.get(url("ca")), await session.get(url("ca")), await session.get(url("cb"))]
        assert [r.status for r in held] == [200, 200, 200]
        status, body, headers = await _status(session, "GET", url("ca"))
        assert (status, body, headers["Retry-After"]) == (
            429, {"error": "too many open subscriptions of call 'ca': 2 (at most 2)"}, "30")
        # another call's replay and readiness are served at once while those streams are open
        async with asyncio.timeout(5):
            status, text = await _text(session, url("cd", "&follow=false"))
            assert (status, text) == (200, "")
            status, ready, _ = await _status(session, "GET", gw.url + "/readyz")
        assert status == 200 and ready["checks"]["redis"] == "ok"
        held.append(await session.get(url("cc")))
        status, body, _ = await _status(session, "GET", url("cc"))
        assert (status, body) == (
            429, {"error": "too many open subscriptions from this client: 4 (at most 4)"})
        for response in held:
            response.close()
        await async_wait_until(lambda: gw.app[LIMITER].total == 0, 10,
                               message="closed streams still counted")
        async with session.get(url("ca")) as response:
            assert response.status == 200


async def _text(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        return response.status, await response.text()


async def test_streams_end_when_their_token_expires(gateway: Gateway) -> None:
    token = issue_token(gateway.settings.secret(), "c-exp", "subscriber", 2)
    url = f"{gateway.url}/v1/calls/c-exp/emotions?token={token}"
    async with aiohttp.ClientSession() as session:
        async with asyncio.timeout(10):
            status, text = await _text(session, url)
        assert (status, text) == (200, 'event: end\ndata: {"reason": "token expired"}\n\n')
        token = issue_token(gateway.settings.secret(), "c-exp", "subscriber", 2)
        async with asyncio.timeout(10), session.ws_connect(
                f"{gateway.url}/v1/calls/c-exp/emotions?token={token}") as ws:
            message = await ws.receive()
        assert (message.type, ws.close_code, message.extra) == (
            aiohttp.WSMsgType.CLOSE, WS_TOKEN_EXPIRED, "token expired")


async def test_a_call_without_participants_ends_by_itself(tansu_broker, redis_server, analyzer) -> None:
    """H5: an idle call ends as if a participant ended it (CallEnded on the topic)."""
    settings = _settings(tansu_broker, redis_server, call_idle_timeout_s=1.0)
    async with run_gateway(settings, analyzer) as gw:
        status, call = await gw.post("/v1/calls", {"participants": ["ann"]})
        assert status == 201
        await async_wait_until(lambda: gw.app[CALLS].get(call["call_id"]) is None, 15,
                               message="the idle call was never ended")
        status, body = await gw.get(f"/v1/calls/{call['call_id']}", call["subscriber_token"])
        assert (status, body) == (404, {"error": f"unknown call {call['call_id']!r} (never created, "
                                                  "or already ended)"})
        _, ended = await read_call(settings.broker_bootstrap_servers, call["call_id"], timeout_s=30)
    assert ended is not None and ended.last_seq == -1


async def test_a_peer_that_never_connects_is_hung_up(tansu_broker, redis_server, analyzer) -> None:
    """H5: an offer whose ICE never completes holds no socket for ever; the gauge follows."""
    settings = _settings(tansu_broker, redis_server, connect_timeout_s=1.0)
    async with run_gateway(settings, analyzer) as gw:
        status, call = await gw.post("/v1/calls", {"participants": ["ann"]})
        call_id, token = call["call_id"], call["participants"][0]["token"]
        status, answer = await gw.post(f"/v1/calls/{call_id}/join",
                                       {"sdp": await _offer(), "type": "offer", "token": token})
        assert status == 200, answer
        assert len(gw.app[CALLS].get(call_id).participants) == 1 and _participants_gauge(gw) == 1
        pc = gw.app[CALLS].get(call_id).participants[answer["speaker_id"]].pc
        await async_wait_until(lambda: not gw.app[CALLS].get(call_id).participants, 15,
                               message="the unconnected participant was never hung up")
        assert _participants_gauge(gw) == 0 and pc.connectionState == "closed"


async def test_a_reconnect_is_fast_and_the_gauge_exact(gateway: Gateway) -> None:
    status, call = await gateway.post("/v1/calls", {"participants": ["ann"]})
    call_id, token = call["call_id"], call["participants"][0]["token"]
    join = f"/v1/calls/{call_id}/join"
    for _ in range(3):
        started = time.monotonic()
        status, answer = await gateway.post(join, {"sdp": await _offer(), "type": "offer", "token": token})
        assert status == 200, answer
        assert time.monotonic() - started < 3.0, "a reconnect waited for the old connection"
        assert _participants_gauge(gateway) == 1
    status, left = await gateway.post(f"/v1/calls/{call_id}/leave", {"token": token})
    assert (status, left["left"], _participants_gauge(gateway)) == (200, True, 0)


async def test_a_created_call_has_its_key_in_redis(gateway: Gateway, redis_server) -> None:
    status, call = await gateway.post("/v1/calls", {})
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        key = call_key(call["call_id"])
        value, ttl_s = await client.get(key), await client.ttl(key)
    finally:
        await client.aclose()
    assert status == 201 and value == b"1" and 0 < ttl_s <= gateway.settings.call_stream_ttl_s
