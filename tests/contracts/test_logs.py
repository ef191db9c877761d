"""One logging set-up: a JSON line survives any message, and no message forges a line."""

from __future__ import annotations

import json
import logging

import pytest

from contracts.logs import JsonFormatter, PlainFormatter, escape_control


def _record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("streamer", logging.INFO, __file__, 1, message, args, None)


@pytest.mark.parametrize("text", ['say "hi"', "a\\b", "line1\nline2", "\r\nFAKE 200 GET /", "\x1b[31mred",
                                  "\u2028"])
def test_json_lines_parse_whatever_the_message(text: str) -> None:
    line = JsonFormatter().format(_record("name %s joined", text))
    assert "\n" not in line and "\r" not in line
    parsed = json.loads(line)
    assert parsed["level"] == "INFO" and parsed["logger"] == "streamer"
    assert parsed["message"] == "name " + escape_control(text) + " joined"


def test_plain_lines_escape_control_characters() -> None:
    formatter = PlainFormatter("%(levelname)s %(message)s")
    line = formatter.format(_record("path %s", "/v1/calls\r\nINFO forged line"))
    assert line == "INFO path /v1/calls\\r\\nINFO forged line"


def test_escape_keeps_printable_unicode() -> None:
    assert escape_control("Zoë 😀 tab\t") == "Zoë 😀 tab\\t"
