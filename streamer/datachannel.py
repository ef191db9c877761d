"""Emotion push: a call's Emotion events, from its Redis stream, down each participant's
``emotions`` data channel.

The client opens a data channel labelled ``emotions`` in its offer (an answer cannot add
one); the gateway accepts it and starts one reader per participant over the call's stream
(:func:`~streamer.subscriptions.read_call_stream`, emotion entries only) from the start,
so a participant who joins (or rejoins) late first gets the call's earlier events, then
live ones. The channel gets each EmotionEvent's JSON as one text message.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from aiortc import RTCDataChannel

from streamer.subscriptions import read_call_stream

CHANNEL_LABEL = "emotions"


async def push_emotions(redis: aioredis.Redis, call_id: str, channel: RTCDataChannel) -> None:
    """Forward the call's emotion events to the open ``channel`` until it closes (a task)."""
    items = read_call_stream(redis, call_id, "0", follow=True, kinds=frozenset({"emotion"}))
    try:
        async for item in items:
            if channel.readyState != "open":
                break
            channel.send(item.data)
    finally:
        await items.aclose()
