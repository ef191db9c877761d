"""The restart policy (pure logic) and the supervisor against fake children."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.supervisor import GaveUp, RestartPolicy, Supervisor


def test_backoff_doubles_is_capped_and_resets_after_a_stable_run() -> None:
    policy = RestartPolicy(initial_s=0.5, max_s=3.0, max_restarts=100, window_s=1e9, reset_after_s=60)
    policy.started(0.0)
    delays = [policy.next_delay(t) for t in (1.0, 2.0, 3.0, 4.0, 5.0)]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]
    policy.started(10.0)
    assert policy.next_delay(75.0) == 0.5  # up 65 s: a new incident, not the same crash loop


def test_more_than_max_restarts_within_the_window_gives_up_older_ones_expire() -> None:
    policy = RestartPolicy(max_restarts=3, window_s=100.0)
    assert all(policy.next_delay(t) is not None for t in (0.0, 1.0, 2.0))
    assert policy.next_delay(3.0) is None
    assert policy.next_delay(101.5) is not None  # the restarts at 0 and 1 s left the window


class FakeService:
    def __init__(self, name: str) -> None:
        self.name, self.started, self._running, self.starts, self.fail = name, False, False, 0, False
        self.log_path = Path(f"/tmp/{name}.log")

    @property
    def running(self) -> bool:
        return self._running

    @property
    def pid(self) -> int | None:
        return 1000 + self.starts if self._running else None

    def start(self) -> None:
        from deploy.services import ServiceError
        if self.fail:
            raise ServiceError("nope")
        self.started, self._running = True, True
        self.starts += 1

    def stop(self) -> None:
        self.started, self._running = False, False

    def stop_for_restart(self) -> None:
        self.stop()

    def die(self) -> None:
        self._running = False

    def reap(self) -> int:
        self.started = False
        return -9


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_supervisor_restarts_a_dead_child_after_its_backoff_and_its_dependents(tmp_path: Path) -> None:
    broker, worker = FakeService("tansu"), FakeService("worker")
    hooks: list[str] = []
    clock = Clock()
    sup = Supervisor([broker, worker], tmp_path, policy=lambda: RestartPolicy(initial_s=1.0),
                     after_restart={"tansu": lambda: hooks.append("topics")},
                     dependents={"tansu": ["worker"]}, clock=clock)
    broker.start(), worker.start()
    sup.started()
    sup.poll()
    assert sup.restarts() == {"tansu": 0, "worker": 0}

    broker.die()
    sup.poll()
    assert not broker.running and broker.starts == 1  # waiting out the back-off
    clock.t = 1.0
    sup.poll()
    assert broker.running and hooks == ["topics"] and not worker.running  # worker stopped to rejoin
    clock.t = 2.0
    sup.poll()
    assert worker.running and worker.starts == 2
    assert sup.restarts() == {"tansu": 1, "worker": 1}
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["tansu"]["restarts"] == 1 and status["tansu"]["last_exit"] == -9
    assert 'cberl_stack_restarts_total{service="worker"} 1' in (tmp_path / "status.prom").read_text()


def test_supervisor_gives_up_on_a_crash_loop(tmp_path: Path) -> None:
    worker = FakeService("worker")
    clock = Clock()
    sup = Supervisor([worker], tmp_path, policy=lambda: RestartPolicy(initial_s=0.1, max_restarts=2),
                     clock=clock)
    worker.start()
    sup.started()
    worker.fail = True
    worker.die()
    with pytest.raises(GaveUp, match="worker .* 2 times"):
        for _ in range(100):
            clock.t += 1.0
            sup.poll()
