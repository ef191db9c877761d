"""The gateway's access log, without query strings, with control characters escaped.

Subscription URLs carry their bearer token in ``?token=`` (a browser's EventSource and
WebSocket cannot send an ``Authorization`` header), and aiohttp's default access log
writes the full request line; tokens must never reach a log, so this one writes the path.
The path is percent-decoded by then (``%0d%0a`` is a real CR LF), so it is escaped with
:func:`contracts.logs.escape_control` here too, whatever formatter the process installed:
a request cannot forge a log line.
"""

from __future__ import annotations

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from contracts.logs import escape_control


class PathOnlyAccessLogger(AbstractAccessLogger):
    """``REMOTE "METHOD PATH" STATUS BYTES SECONDS``, query string left out."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info('%s "%s %s" %d %d %.3fs', request.remote, escape_control(request.method),
                         escape_control(request.path), response.status, response.body_length, time)
