"""Streamer fixtures: one set of models per session, a gateway per test on a free port.

The broker and Redis are the shared session fixtures ``tansu_broker`` / ``redis_server``
(``tests/fixtures_services.py``); a call's events are read back from the topic with
:func:`tests.kafka.read_call`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from deploy.services import RedisServer, TansuBroker, free_port
from streamer.analyzer import SegmentAnalyzer
from streamer.gateway import create_app
from streamer.settings import StreamerSettings, ensure_secret


@pytest.fixture(scope="session")
def analyzer() -> SegmentAnalyzer:
    """Whisper tiny.en + the default model's featurizers, loaded once for every test."""
    return SegmentAnalyzer.load(StreamerSettings())


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
async def run_gateway(settings: StreamerSettings, analyzer: SegmentAnalyzer) -> AsyncIterator[Gateway]:
    """Serve a gateway on 127.0.0.1:free port until the block exits."""
    app = create_app(settings, analyzer)
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
                  analyzer: SegmentAnalyzer) -> AsyncIterator[Gateway]:
    async with run_gateway(gateway_settings(tansu_broker, redis_server), analyzer) as gw:
        yield gw


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("speech")
