"""``GET /v1/calls/{id}/emotions``: a call's event stream, replayed then live.

The call stream (:func:`~contracts.call_stream.call_stream_key`) holds every Emotion
event the workers emitted and, written by this gateway when it publishes, the transcript
of every utterance (:class:`~contracts.events.TranscriptEntry`). A subscriber reads it from
any offset: ``from=0`` (the default) replays the whole call, ``from=$`` only new entries,
``from=<entry id>`` everything after that entry. Each item carries its entry id, so a
client that reconnects continues where it stopped (SSE does this by itself through
``Last-Event-ID``). Consumers keep the highest revision per ``utterance_id``.

Two transports, one handler: a WebSocket when the request asks for an upgrade (one JSON
text message per item: ``{"id", "type", "data"}``), Server-Sent Events otherwise
(``id:``, ``event: utterance|emotion``, ``data: <json>``). A subscriber token of the call
(or a participant token) is required, in ``?token=`` (browsers cannot set headers on
EventSource or WebSocket) or ``Authorization: Bearer``.

A stream ends when its token expires: SSE with a last ``event: end`` whose data says
``{"reason": "token expired"}``, a WebSocket with close code :data:`WS_TOKEN_EXPIRED`. The
gateway bounds how many streams are open (:class:`streamer.limits.SubscriptionLimiter`)
and reads them on a Redis pool of their own, apart from the write path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import WSMsgType, web
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from contracts.call_stream import EMOTION_FIELD, TRANSCRIPT_FIELD, call_stream_key
from contracts.events import EmotionEvent, TranscriptEntry

log = logging.getLogger(__name__)

KINDS = {EMOTION_FIELD: ("emotion", EmotionEvent),
         TRANSCRIPT_FIELD: ("utterance", TranscriptEntry)}
_OFFSET = re.compile(r"(0|\$|([0-9]{1,20})(-([0-9]{1,20}))?)", re.ASCII)
_MAX_ID_PART = 2**64 - 1  # a Redis stream id is two unsigned 64-bit numbers
WS_TOKEN_EXPIRED = 4001
"""WebSocket close code when the subscription's token expires."""
_BLOCK_MS = 1000
_RETRY_S = 1.0
_KEEPALIVE_S = 15.0
_GONE_CHECK_S = 1.0  # how often a silent stream checks that its subscriber is still there


@dataclass(frozen=True)
class StreamItem:
    """One entry of a call's stream: its id, ``utterance`` or ``emotion``, and the JSON."""

    entry_id: str
    kind: str
    data: str


def parse_offset(value: str | None) -> str:
    """A stream offset from a query value; ``ValueError`` names the accepted forms."""
    value = (value or "0").strip()
    match = _OFFSET.fullmatch(value)
    parts = [p for p in (match.group(2), match.group(4)) if p] if match else []
    if match is None or any(int(p) > _MAX_ID_PART for p in parts):
        raise ValueError(f"'from' must be 0, $ or a stream entry id like 1700000000000-0, "
                         f"not {value[:40]!r}")
    return value


async def read_call_stream(redis: aioredis.Redis, call_id: str, offset: str = "0",
                           follow: bool = True, kinds: frozenset[str] | None = None
                           ) -> AsyncIterator[StreamItem]:
    """The call's entries after ``offset``; with ``follow``, wait for new ones forever.

    Entries that do not validate are logged and skipped (a subscriber never gets garbage);
    a Redis outage is logged and retried, never raised.
    """
    key = call_stream_key(call_id)
    last_id = offset
    if last_id == "$" and not follow:
        return
    if last_id == "$":  # resolve "now" once, so a retry after an outage loses nothing
        info = await redis.xrevrange(key, count=1)
        last_id = info[0][0].decode() if info else "0"
    while True:
        try:
            reply = await redis.xread({key: last_id}, block=_BLOCK_MS if follow else None, count=200)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("event stream of call %s unreadable (%r); retrying in %.0f s",
                        call_id, exc, _RETRY_S)
            await asyncio.sleep(_RETRY_S)
            continue
        entries = reply[0][1] if reply else []
        for entry_id, fields in entries:
            last_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            item = _item(call_id, last_id, fields)
            if item is not None and (kinds is None or item.kind in kinds):
                yield item
        if not entries and not follow:
            return


def _item(call_id: str, entry_id: str, fields: dict[bytes, bytes]) -> StreamItem | None:
    for field, raw in fields.items():
        name = field.decode() if isinstance(field, bytes) else field
        if name not in KINDS:
            continue
        kind, model = KINDS[name]
        try:
            return StreamItem(entry_id, kind, model.model_validate_json(raw).model_dump_json())
        except ValidationError as exc:
            log.warning("call %s: stream entry %s is not a valid %s (%s); skipped",
                        call_id, entry_id, kind, exc.errors()[0]["msg"])
            return None
    log.warning("call %s: stream entry %s has no known field; skipped", call_id, entry_id)
    return None


async def serve_subscription(request: web.Request, redis: aioredis.Redis, call_id: str,
                             expires_at_s: float | None = None) -> web.StreamResponse:
    """Answer one subscription (the caller has checked the token); it ends at ``expires_at_s``
    (epoch seconds: the token's expiry)."""
    try:
        offset = parse_offset(request.headers.get("Last-Event-ID") or request.query.get("from"))
    except ValueError as exc:
        raise web.HTTPBadRequest(reason=str(exc)) from exc
    follow = request.query.get("follow", "true").lower() not in ("0", "false", "no")
    wanted = request.query.get("types")
    kinds = frozenset(wanted.split(",")) if wanted else None
    if kinds is not None and not kinds <= {"utterance", "emotion"}:
        raise web.HTTPBadRequest(reason=f"'types' must name utterance and/or emotion, not {wanted!r}")
    items = read_call_stream(redis, call_id, offset, follow, kinds)
    expires = expires_at_s if expires_at_s is not None else float("inf")
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await _websocket(request, items, expires)
    return await _server_sent_events(request, items, expires)


def _left_s(expires_at_s: float) -> float:
    return expires_at_s - time.time()


async def _server_sent_events(request: web.Request, items: AsyncIterator[StreamItem],
                              expires_at_s: float) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    await response.prepare(request)
    pending: asyncio.Task[StreamItem] | None = None
    last_write_s = time.monotonic()
    try:
        while True:
            left_s = _left_s(expires_at_s)
            if left_s <= 0:
                await response.write(b'event: end\ndata: {"reason": "token expired"}\n\n')
                break
            if request.transport is None or request.transport.is_closing():
                break  # the subscriber went away: free its slot and its Redis reader now
            pending = pending or asyncio.ensure_future(anext(items))
            done, _ = await asyncio.wait({pending}, timeout=min(_GONE_CHECK_S, left_s))
            if not done:
                if time.monotonic() - last_write_s >= _KEEPALIVE_S:
                    await response.write(b": keepalive\n\n")  # proxies drop silent connections
                    last_write_s = time.monotonic()
                continue
            last_write_s = time.monotonic()
            try:
                item = pending.result()
            except StopAsyncIteration:
                break
            pending = None
            await response.write(f"id: {item.entry_id}\nevent: {item.kind}\ndata: {item.data}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the subscriber went away
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
        await items.aclose()
    return response


async def _websocket(request: web.Request, items: AsyncIterator[StreamItem],
                     expires_at_s: float) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=20.0)
    await ws.prepare(request)

    async def forward() -> None:
        try:
            left_s = max(_left_s(expires_at_s), 0) if expires_at_s < float("inf") else None
            async with asyncio.timeout(left_s):
                async for item in items:
                    await ws.send_str(json.dumps({"id": item.entry_id, "type": item.kind,
                                                  "data": json.loads(item.data)}))
        except TimeoutError:
            await ws.close(code=WS_TOKEN_EXPIRED, message=b"token expired")
            return
        await ws.close()

    sender = asyncio.create_task(forward())
    try:
        async for msg in ws:  # the client sends nothing; this loop notices it leaving
            if msg.type == WSMsgType.ERROR:
                break
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await items.aclose()
    return ws
