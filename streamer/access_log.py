"""The gateway's access log, without query strings.

Subscription URLs carry their bearer token in ``?token=`` (a browser's EventSource and
WebSocket cannot send an ``Authorization`` header), and aiohttp's default access log
writes the full request line; tokens must never reach a log, so this one writes the path.
"""

from __future__ import annotations

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse


class PathOnlyAccessLogger(AbstractAccessLogger):
    """``REMOTE "METHOD PATH" STATUS BYTES SECONDS``, query string left out."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info('%s "%s %s" %d %d %.3fs', request.remote, request.method, request.path,
                         response.status, response.body_length, time)
