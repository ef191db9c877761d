"""Restart what dies: the embedded stack's supervisor and its restart policy.

:class:`RestartPolicy` is pure logic (tested without processes): a child that exits is
restarted after an exponential back-off (``initial_s``, doubling, capped at ``max_s``); a
child that stayed up ``reset_after_s`` starts again from ``initial_s``; more than
``max_restarts`` restarts within ``window_s`` is a crash loop, and the supervisor gives up
(the stack stops and says why) instead of spinning.

:class:`Supervisor` watches :class:`deploy.services.ChildService` objects, restarts the
dead ones in dependency order, runs the hooks a restart needs (the broker is memory-only:
re-create the topics, then restart its consumers), counts every restart and writes a
status file after each change: ``status.json`` and ``status.prom`` (Prometheus text
format, for node_exporter's textfile collector: ``cberl_stack_restarts_total``,
``cberl_stack_up``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deploy.services import ChildService, ServiceError

log = logging.getLogger("deploy.supervisor")


@dataclass
class RestartPolicy:
    """When to restart a child that exited, and when to stop trying (pure; times in seconds)."""

    initial_s: float = 0.5
    max_s: float = 10.0
    factor: float = 2.0
    max_restarts: int = 5
    window_s: float = 300.0
    reset_after_s: float = 60.0
    _restarts: deque[float] = field(default_factory=deque, repr=False)
    _delay_s: float | None = field(default=None, repr=False)
    _up_since: float | None = field(default=None, repr=False)

    def started(self, now: float) -> None:
        """The child is up (again) at ``now``."""
        self._up_since = now

    def next_delay(self, now: float) -> float | None:
        """The child exited at ``now``: seconds to wait before restarting it, or ``None`` when
        it has been restarted ``max_restarts`` times within ``window_s`` (give up)."""
        while self._restarts and now - self._restarts[0] > self.window_s:
            self._restarts.popleft()
        if len(self._restarts) >= self.max_restarts:
            return None
        stable = self._up_since is not None and now - self._up_since >= self.reset_after_s
        if self._delay_s is None or stable:
            self._delay_s = self.initial_s
        else:
            self._delay_s = min(self._delay_s * self.factor, self.max_s)
        self._restarts.append(now)
        self._up_since = None
        return self._delay_s


class GaveUp(RuntimeError):
    """A child kept dying (restart limit reached) or could not be started again."""


@dataclass
class _Watched:
    service: ChildService
    policy: RestartPolicy
    restarts: int = 0
    last_exit: int | None = None
    restart_at: float | None = None  # monotonic time of the pending restart
    down_since: float | None = None


class Supervisor:
    """Restarts dead children of a stack, in order; ``poll()`` it from the main loop."""

    def __init__(self, services: list[ChildService], status_dir: Path,
                 policy: Callable[[], RestartPolicy] = RestartPolicy,
                 after_restart: dict[str, Callable[[], None]] | None = None,
                 dependents: dict[str, list[str]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._watched = {s.name: _Watched(s, policy()) for s in services}
        self._order = [s.name for s in services]
        self._status_dir = status_dir
        self._after = after_restart or {}
        self._dependents = dependents or {}
        self._clock = clock

    def started(self) -> None:
        """Every service is up (after the stack's first start)."""
        now = self._clock()
        for w in self._watched.values():
            w.policy.started(now)
        self.write_status()

    def restarts(self) -> dict[str, int]:
        return {name: w.restarts for name, w in self._watched.items()}

    def poll(self) -> None:
        """Notice exits, schedule restarts, run those that are due (blocking until ready).

        Raises:
            GaveUp: A child exceeded its restart limit or failed to start again.
        """
        now = self._clock()
        changed = False
        for name in self._order:
            w = self._watched[name]
            if w.restart_at is None and w.service.started and not w.service.running:
                self._schedule(w, w.service.reap(), now, "exited")
                changed = True
        for name in self._order:
            w = self._watched[name]
            if w.restart_at is not None and self._clock() >= w.restart_at:
                self._restart(w)
                changed = True
        if changed:
            self.write_status()

    def _schedule(self, w: _Watched, code: int | None, now: float, why: str) -> None:
        delay = w.policy.next_delay(now)
        w.last_exit = code
        w.down_since = w.down_since or now
        if delay is None:
            self.write_status()
            raise GaveUp(f"{w.service.name} {why} {w.policy.max_restarts} times within "
                         f"{w.policy.window_s:.0f} s; giving up (log: {w.service.log_path})")
        w.restart_at = now + delay
        log.warning("%s %s (status %s); restarting it in %.1f s (restart %d)",
                    w.service.name, why, code, delay, w.restarts + 1)

    def _restart(self, w: _Watched) -> None:
        name = w.service.name
        w.restart_at = None
        try:
            w.service.start()
        except ServiceError as exc:
            log.error("%s did not start again: %s", name, exc)
            self._schedule(w, None, self._clock(), "failed to start")
            return
        w.restarts += 1
        now = self._clock()
        log.warning("%s restarted (pid %s, restart %d, down %.1f s)", name, w.service.pid,
                    w.restarts, now - (w.down_since or now))
        w.down_since = None
        w.policy.started(now)
        hook = self._after.get(name)
        if hook is not None:
            hook()
        for dependent in self._dependents.get(name, []):
            d = self._watched[dependent]
            if d.service.running and d.restart_at is None:
                log.warning("%s restarted: restarting %s too (it depends on it)", name, dependent)
                d.service.stop_for_restart()
                self._schedule(d, None, self._clock(), "stopped for its dependency")

    def status(self) -> dict[str, dict[str, object]]:
        return {name: {"pid": w.service.pid, "up": w.service.running, "restarts": w.restarts,
                       "last_exit": w.last_exit} for name, w in self._watched.items()}

    def write_status(self) -> None:
        """``status.json`` and ``status.prom`` in the status directory (atomic replace)."""
        status = self.status()
        lines = ["# HELP cberl_stack_restarts_total Restarts of each child by the supervisor.",
                 "# TYPE cberl_stack_restarts_total counter"]
        lines += [f'cberl_stack_restarts_total{{service="{n}"}} {s["restarts"]}' for n, s in status.items()]
        lines += ["# HELP cberl_stack_up Whether the child is running.", "# TYPE cberl_stack_up gauge"]
        lines += [f'cberl_stack_up{{service="{n}"}} {int(bool(s["up"]))}' for n, s in status.items()]
        self._status_dir.mkdir(parents=True, exist_ok=True)
        # status.json last: whoever sees it new finds status.prom new too
        for filename, text in (("status.prom", "\n".join(lines) + "\n"),
                               ("status.json", json.dumps(status, sort_keys=True))):
            tmp = self._status_dir / f".{filename}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self._status_dir / filename)
