"""Tokens in subscription URLs never reach the access log; CR/LF in a path forge no line."""

from __future__ import annotations

import io
import logging

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from yarl import URL

from streamer.access_log import PathOnlyAccessLogger
from streamer.gateway import create_app
from tests.streamer.conftest import gateway_settings
from tests.waiting import async_wait_until


def test_access_log_drops_the_query_string(caplog: pytest.LogCaptureFixture) -> None:
    request = make_mocked_request("GET", "/v1/calls/c-1/emotions?token=SECRET.SIG&from=0")
    logger = logging.getLogger("test.access")
    with caplog.at_level(logging.INFO, logger="test.access"):
        PathOnlyAccessLogger(logger, "").log(request, web.Response(status=200, text="ok"), 0.25)
    line = caplog.records[-1].getMessage()
    assert '"GET /v1/calls/c-1/emotions" 200' in line
    assert "SECRET" not in line and "token" not in line


@pytest.mark.asyncio
async def test_crlf_in_a_real_request_path_forges_no_log_line(tansu_broker, redis_server, analyzer) -> None:
    """H6: ``%0d%0a`` in a path is a real CR LF once decoded; the access line escapes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))  # not ours: the logger escapes by itself
    logger = logging.getLogger("test.access.real")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    settings = gateway_settings(tansu_broker, redis_server)
    runner = web.AppRunner(create_app(settings, analyzer), access_log_class=PathOnlyAccessLogger,
                           access_log=logger)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.port).start()
    try:
        async with aiohttp.ClientSession() as session, session.get(URL(
                f"http://127.0.0.1:{settings.port}/v1/calls/c-1%0d%0aINFO%20forged%20line?token=SECRET.SIG",
                encoded=True)) as response:
            assert response.status == 404
        text = await async_wait_until(stream.getvalue, 10, message="no access line written")
    finally:
        await runner.cleanup()
        logger.removeHandler(handler)
    assert text.count("\n") == 1, text
    assert '"GET /v1/calls/c-1\\r\\nINFO forged line" 404' in text
    assert "SECRET" not in text
