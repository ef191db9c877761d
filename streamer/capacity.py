"""Admission control: the streamer refuses new calls and joins it cannot serve in real time.

The streamer knows how loaded it is from a seat budget and three signals sampled on the
event loop:

- **Seats**: ``capacity_participants_per_core`` x the usable CPU cores. A new call reserves
  one seat per name it is created with (:attr:`streamer.calls.Call.seats`), an extra
  participant takes one more. The load signals below only see audio that is already
  flowing, so calls created within seconds of each other would all pass them before anyone
  speaks; the budget is what the end-to-end benchmark measured this CPU to hold.

- **ASR backlog**: seconds of audio queued for (or in) Whisper
  (:attr:`streamer.analyzer.SegmentAnalyzer.backlog_s`). Above ``capacity_max_backlog_s``
  the ASR thread is behind: labels of the admitted calls are already late.
- **Event-loop lag**: how late a 100 ms timer fires, the median over the last 3 s (a
  sustained lag, not the one-off stall of a join's DTLS handshake). Audio decode, VAD,
  RTP and signaling all run on the loop; above ``capacity_max_loop_lag_ms`` media of
  admitted calls is already delayed.
- **ASR utilization**: the ASR thread's busy share over the last 10 s, divided by the
  live audio streams, is the cost of one participant; projected with the newcomers,
  it must stay below ``capacity_max_asr_utilization``. This refuses *before* a backlog
  builds (a queue only grows once utilization reaches 1).

:meth:`Capacity.admit` raises :class:`streamer.limits.LimitError` 503 with
``Retry-After`` and a message naming the signal; ``/readyz`` reports
:meth:`Capacity.reason` under ``checks.capacity`` (503 while full, so a load balancer
sends new calls elsewhere). A reconnect of a participant already in a call is always
admitted. Past admission, the ASR degrades rather than drops (``streamer.analyzer``).
Gauges: ``streamer_asr_backlog_seconds``, ``streamer_event_loop_lag_seconds``,
``streamer_asr_utilization``; counter ``streamer_admission_refused_total{reason}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import statistics
from collections import deque
from collections.abc import Callable
from typing import Protocol

from streamer.limits import LimitError
from streamer.metrics import StreamerMetrics
from streamer.settings import StreamerSettings

log = logging.getLogger(__name__)

_TICK_S = 0.1
_LAG_WINDOW_S = 3.0
_UTIL_WINDOW_S = 10.0
_MIN_LAG_SAMPLES = 3


class LoadSource(Protocol):
    """What the monitor reads from the analyzer."""

    @property
    def backlog_s(self) -> float: ...

    @property
    def busy_s(self) -> float: ...

    @property
    def active_streams(self) -> int: ...


class Capacity:
    """Load signals and the admission rule of one gateway process.

    Args:
        source: The analyzer (backlog, busy time, live audio streams).
        settings: ``capacity_*`` limits.
        metrics: Where the gauges and the refusal counter live.
        seats: Seats in use now (:meth:`streamer.calls.CallRegistry.seats_in_use`); ``None``:
            no seat budget.
    """

    def __init__(self, source: LoadSource, settings: StreamerSettings,
                 metrics: StreamerMetrics | None = None,
                 seats: Callable[[], int] | None = None) -> None:
        self._source = source
        self._seats = seats
        self.cores = usable_cores()
        self.max_seats = int(settings.capacity_participants_per_core * self.cores)
        self.max_backlog_s = settings.capacity_max_backlog_s
        self.max_lag_s = settings.capacity_max_loop_lag_ms / 1000
        self.max_utilization = settings.capacity_max_asr_utilization
        self.retry_after_s = settings.capacity_retry_after_s
        self._metrics = metrics
        self._lags: deque[tuple[float, float]] = deque()
        self._busy: deque[tuple[float, float]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._started_s = 0.0
        if metrics is not None:
            metrics.asr_backlog.set_function(lambda: self._source.backlog_s)
            metrics.loop_lag.set_function(self.loop_lag_s)
            metrics.asr_utilization.set_function(self.utilization)
            metrics.asr_degraded.set_function(lambda: float(getattr(self._source, "degraded", False)))

    def start(self) -> None:
        """Start sampling (on the running loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._sample(), name="capacity-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _sample(self) -> None:
        loop = asyncio.get_running_loop()
        self._started_s = loop.time()
        while True:
            planned = loop.time() + _TICK_S
            await asyncio.sleep(_TICK_S)  # a period: how late it wakes is the measurement
            now = loop.time()
            self._lags.append((now, max(now - planned, 0.0)))
            self._busy.append((now, self._source.busy_s))
            while self._lags and self._lags[0][0] < now - _LAG_WINDOW_S:
                self._lags.popleft()
            while len(self._busy) > 2 and self._busy[0][0] < now - _UTIL_WINDOW_S:
                self._busy.popleft()

    def loop_lag_s(self) -> float:
        """The median timer delay of the last 3 s."""
        if len(self._lags) < _MIN_LAG_SAMPLES or self._lags[-1][0] - self._started_s < 1.0:
            return 0.0  # just started: too few ticks to call a lag sustained
        return float(statistics.median(lag for _, lag in self._lags))

    def utilization(self) -> float:
        """The ASR thread's busy share over the last 10 s (0..1)."""
        if len(self._busy) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self._busy[0], self._busy[-1]
        return min(max((b1 - b0) / max(t1 - t0, 1e-6), 0.0), 1.0)

    def reason(self, joining: int = 0) -> str | None:
        """Why a newcomer (``joining`` more audio streams) would be refused, or ``None``."""
        found = self._refusal(joining)
        return None if found is None else found[1]

    def _refusal(self, joining: int, seated: bool = False) -> tuple[str, str] | None:
        if joining and not seated and self._seats is not None and self.max_seats > 0:
            used = self._seats()
            if used + joining > self.max_seats:
                return "seats", (f"{used} participant seats in use + {joining} > {self.max_seats} "
                                 f"({self.cores} cores)")
        backlog_s = self._source.backlog_s
        if backlog_s > self.max_backlog_s:
            return "backlog", (f"ASR backlog {backlog_s:.1f} s of audio > {self.max_backlog_s:.1f} s: "
                               f"transcription is behind")
        lag_s = self.loop_lag_s()
        if lag_s > self.max_lag_s:
            return "loop_lag", (f"event-loop lag {lag_s * 1000:.0f} ms > {self.max_lag_s * 1000:.0f} ms: "
                                f"media is delayed")
        streams = self._source.active_streams
        util = self.utilization()
        if joining and streams:
            projected = util * (streams + joining) / streams
            if projected > self.max_utilization:
                return "utilization", (f"ASR utilization {util:.0%} with {streams} participants would "
                                       f"be {projected:.0%} with {joining} more "
                                       f"(> {self.max_utilization:.0%})")
        return None

    def admit(self, joining: int = 1, seated: bool = False) -> None:
        """Raise :class:`LimitError` 503 (with ``Retry-After``) when beyond capacity.

        ``seated``: the newcomer takes a seat its call reserved at creation (no new seat).
        """
        found = self._refusal(joining, seated)
        if found is None:
            return
        kind, why = found
        if self._metrics is not None:
            self._metrics.admission_refused.labels(reason=kind).inc()
        log.warning("refused a new call or participant: %s", why)
        raise LimitError(503, f"the streamer is at capacity ({why}); retry in {self.retry_after_s} s",
                         retry_after_s=self.retry_after_s)

    def check(self) -> str:
        """``ok`` or the reason, for ``/readyz``."""
        return self.reason(0) or "ok"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
