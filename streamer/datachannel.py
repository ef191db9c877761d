"""Emotion push: a call's Emotion events, from its Redis stream, down each participant's
``emotions`` data channel.

The client opens a data channel labelled ``emotions`` in its offer (an answer cannot add
one); the gateway accepts it and starts one reader per participant: ``XREAD BLOCK`` on
:func:`~workers.events.emotion_stream_key` from the stream's beginning, so a participant
who joins (or rejoins) late first gets the call's earlier events, then live ones. Each
stream entry holds one field whose value is the EmotionEvent JSON; entries that do not
validate are logged and skipped. The channel gets the event JSON as one text message.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from aiortc import RTCDataChannel
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from workers.events import EmotionEvent, emotion_stream_key

log = logging.getLogger(__name__)

CHANNEL_LABEL = "emotions"
_BLOCK_MS = 1000
_RETRY_S = 1.0


async def push_emotions(redis: aioredis.Redis, call_id: str, channel: RTCDataChannel) -> None:
    """Forward the call's emotion events to the open ``channel`` until it closes (a task)."""
    key = emotion_stream_key(call_id)
    last_id = "0-0"
    while channel.readyState == "open":
        try:
            reply = await redis.xread({key: last_id}, block=_BLOCK_MS, count=100)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("emotion stream of call %s unreadable (%r); retrying in %.0f s",
                        call_id, exc, _RETRY_S)
            await asyncio.sleep(_RETRY_S)
            continue
        for _key, entries in reply or []:
            for entry_id, fields in entries:
                last_id = entry_id
                _forward(call_id, entry_id, fields, channel)


def _forward(call_id: str, entry_id: bytes | str, fields: dict[bytes, bytes],
             channel: RTCDataChannel) -> None:
    if len(fields) != 1:
        log.warning("call %s: stream entry %s has %d fields, expected 1; skipped",
                    call_id, entry_id, len(fields))
        return
    raw = next(iter(fields.values()))
    try:
        event = EmotionEvent.model_validate_json(raw)
    except ValidationError as exc:
        log.warning("call %s: stream entry %s is not an EmotionEvent (%s); skipped",
                    call_id, entry_id, exc.errors()[0]["msg"])
        return
    channel.send(event.model_dump_json())
