"""Transcript fan-out onto the call's Redis stream: written when Redis answers, retried and
then dropped with an ERROR line (never raised into the publishing path) when it does not."""

from __future__ import annotations

import logging

import pytest
import redis.asyncio as aioredis

from contracts.call_stream import TRANSCRIPT_FIELD, call_stream_key
from contracts.events import TranscriptEntry, UtteranceEvent
from deploy.services import RedisServer, free_port
from streamer.transcripts import TranscriptWriter
from tests.factories import utterance


def _utterance(call_id: str, seq: int) -> UtteranceEvent:
    return utterance(seq, call_id=call_id, utterance_id=f"u{seq}", speaker_id="alice",
                     features={"text": [0.5, 0.25]})


@pytest.mark.asyncio
async def test_transcripts_land_on_the_call_stream_without_features(redis_server: RedisServer) -> None:
    client = aioredis.from_url(redis_server.url)
    writer = TranscriptWriter(client, maxlen=100, ttl_s=60)
    for seq in range(50):  # more than the connection pool interleaves: order must still hold
        writer.submit(_utterance("c-transcript", seq))
    await writer.drain()
    key = call_stream_key("c-transcript")
    entries = await client.xrange(key)
    ttl = await client.ttl(key)
    await client.aclose()
    stored = [TranscriptEntry.model_validate_json(fields[TRANSCRIPT_FIELD.encode()])
              for _, fields in entries]
    expected = [(seq, f"line {seq}", "alice") for seq in range(50)]
    assert [(e.seq, e.text, e.speaker_id) for e in stored] == expected
    assert 0 < ttl <= 60


@pytest.mark.asyncio
async def test_dead_redis_drops_the_transcript_with_an_error_line(caplog: pytest.LogCaptureFixture) -> None:
    client = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    writer = TranscriptWriter(client, maxlen=100, ttl_s=60)
    with caplog.at_level(logging.WARNING, logger="streamer.transcripts"):
        writer.submit(_utterance("c-dead", 7))
        await writer.drain(timeout_s=30)
    await client.aclose()
    retries = [r for r in caplog.records if r.levelno == logging.WARNING]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage().split("(attempt ")[1][:3] for r in retries] == ["1/4", "2/4", "3/4"]
    assert len(errors) == 1 and "u7 (call c-dead) dropped after 4 attempts" in errors[0]


@pytest.mark.asyncio
async def test_a_full_backlog_drops_new_transcripts_with_an_error_line(
        caplog: pytest.LogCaptureFixture) -> None:
    client = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    writer = TranscriptWriter(client, maxlen=100, ttl_s=60, backlog=1)
    with caplog.at_level(logging.ERROR, logger="streamer.transcripts"):
        for seq in range(3):  # the writer task has not run yet: one waits, two find the queue full
            writer.submit(_utterance("c-full", seq))
        await writer.drain(timeout_s=0.1)
    await client.aclose()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert [e.split(" dropped")[0] for e in errors] == ["transcript of utterance u1 (call c-full)",
                                                        "transcript of utterance u2 (call c-full)"]
    assert all("1 transcripts already wait for Redis" in e for e in errors)
