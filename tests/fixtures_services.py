"""Session fixtures: a real tansu broker and a real redis-server on 127.0.0.1; and
:class:`ServiceProcess`, how the tests launch our own Python services.

Registered from ``tests/conftest.py`` (``pytest_plugins``). Each fixture runs once per
test session on a free port with its own temporary directory; tests that need a private
instance (to kill or restart it) build their own :class:`deploy.services.RedisServer`
or :class:`deploy.services.TansuBroker` the same way.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.services import PythonService, RedisServer, TansuBroker, free_port

ROOT = Path(__file__).resolve().parents[1]

SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
"""Two shared cores: one intra-op thread per child process (see ``single_thread``)."""


class ServiceProcess(PythonService):
    """``python -m MODULE`` of this checkout as a child service, ready when ``ready_path``
    on ``port`` answers 200 (:class:`deploy.services.PythonService`; subclasses may probe
    more, never by third-party log text).

    Single-threaded torch, this checkout first on ``sys.path`` (the process runs in
    ``data_dir``), the whole output in ``data_dir/NAME.log`` (:meth:`output`).
    """

    def __init__(self, name: str, module: str, args: list[str], port: int, ready_path: str,
                 data_dir: Path, env: dict[str, str] | None = None, startup_timeout_s: float = 120.0) -> None:
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        super().__init__(name, module, args, port, ready_path, data_dir,
                         {**SINGLE_THREAD_ENV, "PYTHONPATH": path, **(env or {})}, startup_timeout_s)

    def output(self) -> str:
        """Everything the process wrote so far (stdout and stderr)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def send_signal(self, signum: signal.Signals) -> None:
        assert self._process is not None, f"{self.name} is not running"
        self._process.send_signal(signum)

    def wait(self, timeout_s: float) -> int:
        """The exit status, once the process has exited (``subprocess.TimeoutExpired`` if not)."""
        assert self._process is not None, f"{self.name} was not started"
        return self._process.wait(timeout_s)


@pytest.fixture(scope="session")
def tansu_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """A memory-only tansu broker; ``.bootstrap_servers`` is ``127.0.0.1:PORT``."""
    with TansuBroker(free_port(), tmp_path_factory.mktemp("tansu")) as broker:
        yield broker


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server with an append-only file; ``.url`` is ``redis://127.0.0.1:PORT/0``."""
    with RedisServer(free_port(), tmp_path_factory.mktemp("redis")) as server:
        yield server
