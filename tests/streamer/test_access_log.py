"""Tokens in subscription URLs never reach the access log."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from streamer.access_log import PathOnlyAccessLogger


def test_access_log_drops_the_query_string(caplog: pytest.LogCaptureFixture) -> None:
    request = make_mocked_request("GET", "/v1/calls/c-1/emotions?token=SECRET.SIG&from=0")
    logger = logging.getLogger("test.access")
    with caplog.at_level(logging.INFO, logger="test.access"):
        PathOnlyAccessLogger(logger, "").log(request, web.Response(status=200, text="ok"), 0.25)
    line = caplog.records[-1].getMessage()
    assert '"GET /v1/calls/c-1/emotions" 200' in line
    assert "SECRET" not in line and "token" not in line
