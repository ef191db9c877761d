"""Streamer fixtures: one set of models per session, a gateway per test on a free port,
a reader of the real tansu broker's ``utterances`` topic.

The broker and Redis are the shared session fixtures ``tansu_broker`` / ``redis_server``
(``tests/fixtures_services.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiokafka import AIOKafkaConsumer

from streamer.gateway import create_app
from streamer.recognizer import SegmentRecognizer
from streamer.settings import StreamerSettings, ensure_secret
from workers.events import UTTERANCES_TOPIC, CallEnded, UtteranceEvent, parse_utterances_message
from workers.services import RedisServer, TansuBroker, free_port


@pytest.fixture(scope="session")
def recognizer() -> SegmentRecognizer:
    """Whisper tiny.en + the default model's featurizers, loaded once for every test."""
    return SegmentRecognizer.load(StreamerSettings())


@dataclass
class Gateway:
    url: str
    app: web.Application
    settings: StreamerSettings

    async def post(self, path: str, body: object = None, raw: str | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, dict]:
        async with aiohttp.ClientSession() as session, session.post(
                self.url + path, json=None if raw is not None else body, data=raw,
                headers=headers) as response:
            return response.status, await response.json()

    async def get(self, path: str, token: str | None = None) -> tuple[int, dict | str]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as session, session.get(self.url + path,
                                                                    headers=headers) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()


@contextlib.asynccontextmanager
async def run_gateway(settings: StreamerSettings, recognizer: SegmentRecognizer) -> AsyncIterator[Gateway]:
    """Serve a gateway on 127.0.0.1:free port until the block exits."""
    app = create_app(settings, recognizer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", settings.port)
    await site.start()
    try:
        yield Gateway(f"http://127.0.0.1:{settings.port}", app, settings)
    finally:
        await runner.cleanup()


def gateway_settings(broker: TansuBroker, redis: RedisServer, **overrides: object) -> StreamerSettings:
    return ensure_secret(StreamerSettings(
        port=free_port(), broker_bootstrap_servers=broker.bootstrap_servers, redis_url=redis.url,
        **overrides))


@pytest_asyncio.fixture
async def gateway(tansu_broker: TansuBroker, redis_server: RedisServer,
                  recognizer: SegmentRecognizer) -> AsyncIterator[Gateway]:
    async with run_gateway(gateway_settings(tansu_broker, redis_server), recognizer) as gw:
        yield gw


async def read_call(bootstrap: str, call_id: str, timeout_s: float = 60.0
                    ) -> tuple[list[UtteranceEvent], CallEnded | None]:
    """Every utterance of ``call_id`` on the topic, up to its CallEnded (or the timeout)."""
    consumer = AIOKafkaConsumer(UTTERANCES_TOPIC, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    utterances: list[UtteranceEvent] = []
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        if record.key != call_id.encode():
                            continue
                        event = parse_utterances_message(record.value)
                        if isinstance(event, CallEnded):
                            return utterances, event
                        utterances.append(event)
    except TimeoutError:
        return utterances, None
    finally:
        await consumer.stop()


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("speech")
