"""The one logging set-up: plain lines for people, or one JSON object per line.

Messages are escaped before they are written: a CR, LF or other control character in a
logged value (a URL path, a participant name) cannot forge a log line, and the JSON form
is built with :func:`json.dumps`, so a quote in a message never breaks it.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_QUIET = ("aioice", "aiortc", "transformers", "httpx", "huggingface_hub", "peft",
          "matplotlib", "faster_whisper", "urllib3")

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def escape_control(text: str) -> str:
    """``text`` with control characters written as ``\\xNN`` / ``\\uNNNN`` escapes."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class PlainFormatter(logging.Formatter):
    """The plain line, message escaped (tracebacks keep their own newlines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = escape_control(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message"[, "exc"]}`` per record, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {"ts": self.formatTime(record), "level": record.levelname,
                                "logger": record.name,
                                "message": escape_control(record.getMessage())}
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=True)


def logging_config(level: str = "INFO", json_lines: bool = False) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` dict (faust's Worker applies one at start)."""
    formatter: dict[str, Any] = ({"()": f"{__name__}.JsonFormatter"} if json_lines
                                 else {"()": f"{__name__}.PlainFormatter", "format": PLAIN_FORMAT})
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "default",
                                "stream": "ext://sys.stderr"}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {name: {"level": "WARNING"} for name in _QUIET},
    }


def setup_logging(level: str = "INFO", json_lines: bool = False) -> None:
    """Configure the root logger for a process (call once, at its entry point)."""
    logging.config.dictConfig(logging_config(level, json_lines))
