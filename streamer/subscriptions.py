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
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
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
_OFFSET = re.compile(r"^(0|\$|\d+(-\d+)?)$")
_BLOCK_MS = 1000
_RETRY_S = 1.0
_KEEPALIVE_S = 15.0


@dataclass(frozen=True)
class StreamItem:
    """One entry of a call's stream: its id, ``utterance`` or ``emotion``, and the JSON."""

    entry_id: str
    kind: str
    data: str


def parse_offset(value: str | None) -> str:
    """A stream offset from a query value; ``ValueError`` names the accepted forms."""
    value = (value or "0").strip()
    if not _OFFSET.match(value):
        raise ValueError(f"'from' must be 0, $ or a stream entry id like 1700000000000-0, not {value!r}")
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


async def serve_subscription(request: web.Request, redis: aioredis.Redis, call_id: str
                             ) -> web.StreamResponse:
    """Answer one subscription (the caller has checked the token)."""
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
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await _websocket(request, items)
    return await _server_sent_events(request, items)


async def _server_sent_events(request: web.Request, items: AsyncIterator[StreamItem]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    await response.prepare(request)
    pending: asyncio.Task[StreamItem] | None = None
    try:
        while True:
            pending = pending or asyncio.ensure_future(anext(items))
            done, _ = await asyncio.wait({pending}, timeout=_KEEPALIVE_S)
            if not done:  # proxies drop silent connections; a comment line keeps it open
                await response.write(b": keepalive\n\n")
                continue
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


async def _websocket(request: web.Request, items: AsyncIterator[StreamItem]) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=20.0)
    await ws.prepare(request)

    async def forward() -> None:
        async for item in items:
            await ws.send_str(json.dumps({"id": item.entry_id, "type": item.kind,
                                          "data": json.loads(item.data)}))
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
