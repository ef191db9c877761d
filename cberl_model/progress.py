"""Progress that fits where stderr goes: a tqdm bar on a terminal, log lines otherwise.

A bar redirected to a file is a stream of carriage returns (a training log becomes
megabytes of them). :func:`progress` therefore draws a bar only when stderr is a terminal;
otherwise it writes one log line when the stage ends (``desc: 120/120 batch in 3.2 s``),
or nothing when the caller logs its own line per stage (``summary=False``), plus, for long
stages, one line every ``interval_s``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


def stderr_is_terminal() -> bool:
    """Whether ``sys.stderr`` is an interactive terminal (False when it has no ``isatty``)."""
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False


class Progress(Generic[T]):
    """One stage's progress; iterate it (or call :meth:`update`), then :meth:`close` it.

    Use :func:`progress` to make one. Also a context manager (closes on exit).
    """

    def __init__(self, iterable: Iterable[T] | None, desc: str, total: int | None, unit: str,
                 enabled: bool, leave: bool, summary: bool, interval_s: float | None,
                 logger: logging.Logger) -> None:
        self.iterable = iterable
        self.desc, self.unit = desc, unit
        self.total = total if total is not None else _length(iterable)
        self.count = 0
        self.postfix: dict[str, Any] = {}
        self._summary, self._interval_s, self._log = summary and enabled, interval_s, logger
        self._started = self._last_line = time.perf_counter()
        self._closed = False
        self._bar = None
        if enabled and stderr_is_terminal():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=unit, leave=leave)
            self._summary = False  # the bar shows it
        self._quiet = not enabled

    def __repr__(self) -> str:
        mode = "bar" if self._bar is not None else "quiet" if self._quiet else "log"
        return f"{self.__class__.__name__}({self.desc!r}, {self.count}/{self.total}, {mode})"

    def __iter__(self) -> Iterator[T]:
        if self.iterable is None:
            raise TypeError(f"progress {self.desc!r} was made without an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> Progress[T]:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        self.count += n
        if self._bar is not None:
            self._bar.update(n)
        elif not self._quiet and self._interval_s is not None:
            now = time.perf_counter()
            if now - self._last_line >= self._interval_s:
                self._last_line = now
                self._log.info("%s: %s so far", self.desc, self._done())

    def set_postfix(self, **values: Any) -> None:
        """Values shown beside the bar (and in the closing log line)."""
        self.postfix = values
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)

    def close(self) -> None:
        """End the stage: close the bar, or write the one summary line."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self._summary:
            self._log.info("%s: %s in %.1f s", self.desc, self._done(),
                           time.perf_counter() - self._started)

    def _done(self) -> str:
        done = f"{self.count}/{self.total}" if self.total is not None else str(self.count)
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        return f"{done} {self.unit}{extra}"


def progress(iterable: Iterable[T] | None = None, desc: str = "", *, total: int | None = None,
             unit: str = "it", enabled: bool = True, leave: bool = True, summary: bool = True,
             interval_s: float | None = None, logger: logging.Logger | None = None) -> Progress[T]:
    """Report a stage's progress in the form that suits stderr.

    Args:
        iterable: What to iterate (or ``None`` and call :meth:`Progress.update`).
        desc: The stage's name, e.g. ``"cberl epoch 3"``.
        total: Units in the stage (default ``len(iterable)`` when it has one).
        unit: Name of a unit (``"batch"``, ``"utt"``).
        enabled: False reports nothing at all (``--no-progress``).
        leave: Keep the terminal bar once finished.
        summary: Without a terminal, log one line when the stage ends; False when the
            caller logs its own line per stage (e.g. per epoch).
        interval_s: Without a terminal, also log a line at most this often (long stages).
        logger: Where the lines go (default this module's logger).
    """
    return Progress(iterable, desc, total, unit, enabled, leave, summary, interval_s,
                    logger or log)


def _length(iterable: Iterable[Any] | None) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None
