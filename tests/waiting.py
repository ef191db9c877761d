"""Wait for a condition, not for a fixed time: :func:`wait_until` and :func:`async_wait_until`.

Both poll ``predicate`` every ``interval_s`` until it returns something truthy, and return
that value; after ``timeout_s`` they raise :class:`AssertionError` with ``message`` (a
string, or a callable for details known only at the end, such as the last value seen).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

Message = str | Callable[[], str]


def _failure(message: Message, timeout_s: float, last: object) -> AssertionError:
    text = message() if callable(message) else message
    return AssertionError(f"{text or 'condition not met'} (waited {timeout_s:g} s; last value {last!r})")


def wait_until(predicate: Callable[[], T], timeout_s: float, interval_s: float = 0.05,
               message: Message = "") -> T:
    """``predicate()``'s first truthy value, polled every ``interval_s`` for ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _failure(message, timeout_s, value)
        time.sleep(interval_s)


async def async_wait_until(predicate: Callable[[], T | Awaitable[T]], timeout_s: float,
                           interval_s: float = 0.05, message: Message = "") -> T:
    """:func:`wait_until` in a coroutine; ``predicate`` may be sync or async."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise _failure(message, timeout_s, value)
        await asyncio.sleep(interval_s)
