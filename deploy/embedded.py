"""The embedded default: the whole system on one machine, on 127.0.0.1, in one command.

``python -m deploy.embedded`` (what ``deploy/run.sh`` runs) starts, as child processes,
the tansu broker and redis-server, creates the topics, then a recognizer worker and the
streamer with the bundled default model; it waits until each answers, prints the page's
URL, and on Ctrl-C (or SIGTERM) stops them in reverse order, so no process is left behind
and every port is freed. A port already in use is an error before anything starts.

A child that dies is restarted (:mod:`deploy.supervisor`: back-off, a restart limit, a log
line, ``DATA_DIR/status.json`` and ``status.prom``); calls in progress continue. After a
broker restart (tansu is memory-only) the topics are created again and the worker is
restarted so it rejoins. redis-server gets a random password per start, and the streamer
and worker a random ``event_secret``; secrets travel by environment only.

Settings: ``CBERL_STACK_*`` environment variables or the flags below (``--help``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import signal
import sys
import time
from pathlib import Path
from types import FrameType, TracebackType

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, CliSuppress, SettingsConfigDict

from contracts.cli import load_settings, run_cli
from contracts.logs import setup_logging
from contracts.settings import SharedSettings, masked
from contracts.topics import TopicError, ensure_topics
from deploy.services import (
    HOST,
    ChildService,
    PythonService,
    RedisServer,
    ServiceError,
    StandbyPythonService,
    TansuBroker,
    free_port,
)
from deploy.supervisor import GaveUp, RestartPolicy, Supervisor

log = logging.getLogger("deploy.embedded")

ROOT = Path(__file__).resolve().parents[1]


class StackSettings(BaseSettings):
    """Ports, paths and model of the embedded stack (all services bind 127.0.0.1)."""

    model_config = SettingsConfigDict(env_prefix="CBERL_STACK_", cli_kebab_case=True, cli_implicit_flags=True)

    port: int = Field(8080, ge=1, le=65535, description="the streamer: web page and API")
    broker_port: int = Field(9092, ge=1, le=65535, description="tansu (Kafka protocol)")
    redis_port: int = Field(6379, ge=1, le=65535, description="redis-server")
    worker_metrics_port: int = Field(9100, ge=1, le=65535, description="the worker's /metrics")
    data_dir: Path = Field(ROOT / ".cache" / "stack", description="logs and Redis data")
    model_dir: Path | None = Field(None, description="model directory; default: the bundled model")
    partitions: int = Field(4, ge=1, description="partitions of the utterances/emotions topics")
    token_secret: CliSuppress[SecretStr | None] = Field(  # env only: never on a command line
        None, description="token signing key (CBERL_STACK_TOKEN_SECRET); random when unset")
    startup_timeout_s: float = Field(120.0, gt=0)
    max_restarts: int = Field(5, ge=0, description="restarts of one child within restart-window-s "
                                                   "before the stack gives up")
    restart_window_s: float = Field(300.0, gt=0)
    restart_backoff_max_s: float = Field(10.0, gt=0, description="longest wait before a restart")
    standby: bool = Field(True, description="keep a warm spare worker and streamer (about 1.4 GB "
                                            "more): a dead one is replaced in about 2 s, not 10")


class EmbeddedStack:
    """Broker, Redis, one worker and the streamer; a context manager that cleans up."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        secret = (settings.token_secret.get_secret_value() if settings.token_secret
                  else secrets.token_urlsafe(32))
        data = settings.data_dir
        timeout = settings.startup_timeout_s
        self.broker = TansuBroker(settings.broker_port, data / "tansu")
        self.redis = RedisServer(settings.redis_port, data / "redis", password=secrets.token_urlsafe(24))
        # Secrets and model paths travel by environment, never on a command line (ps shows it).
        common = {"CBERL_LOG_JSON": "false", "CBERL_REDIS_URL": self.redis.url,
                  "CBERL_EVENT_SECRET": secrets.token_urlsafe(32)}
        if settings.model_dir is not None:
            common["CBERL_MODEL_DIR"] = str(settings.model_dir)
        python_service = StandbyPythonService if settings.standby else PythonService
        self.worker = python_service(
            "worker", "workers",
            ["--broker-bootstrap-servers", self.broker.bootstrap_servers, "--broker-profile", "tansu",
             "--partitions", str(settings.partitions),
             "--metrics-port", str(settings.worker_metrics_port),
             "--group-instance-id", "embedded-worker"],
            settings.worker_metrics_port, "/metrics", data / "worker", common, timeout)
        self.streamer = python_service(
            "streamer", "streamer",
            ["--host", HOST, "--port", str(settings.port),
             "--broker-bootstrap-servers", self.broker.bootstrap_servers, "--broker-profile", "tansu",
             "--partitions", str(settings.partitions)],
            settings.port, "/readyz", data / "streamer", {**common, "CBERL_TOKEN_SECRET": secret}, timeout)
        self.services: list[ChildService] = [self.broker, self.redis, self.worker, self.streamer]
        self.supervisor = Supervisor(
            self.services, data,
            policy=lambda: RestartPolicy(max_s=settings.restart_backoff_max_s,
                                         max_restarts=settings.max_restarts,
                                         window_s=settings.restart_window_s),
            after_restart={"tansu": self.create_topics}, dependents={"tansu": ["worker"]})

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.settings.port}/"

    def check_ports(self) -> None:
        """Refuse to start anything when one of the ports is taken."""
        taken = [f"{s.name} {HOST}:{s.port}" for s in self.services if s.port_in_use()]
        if taken:
            raise ServiceError(f"port already in use: {', '.join(taken)} (choose others with the "
                               f"--port/--broker-port/--redis-port/--worker-metrics-port flags)")

    def start(self) -> None:
        self.check_ports()
        started = time.monotonic()
        try:
            self.broker.start()
            self.redis.start()
            self.create_topics()
            self.worker.start()
            self.streamer.start()
        except BaseException:
            self.stop()
            raise
        self.supervisor.started()
        log.info("stack up in %.1f s", time.monotonic() - started)

    def create_topics(self) -> None:
        """The topics on the broker (again after a restart: tansu keeps them in memory)."""
        topics = SharedSettings(partitions=self.settings.partitions).topic_partitions()
        asyncio.run(ensure_topics(self.broker.bootstrap_servers, topics))

    def supervise(self) -> None:
        """Restart children that died (:class:`deploy.supervisor.Supervisor`); raises
        :class:`deploy.supervisor.GaveUp` when one keeps dying."""
        self.supervisor.poll()

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()

    def dead(self) -> list[str]:
        """Services that were started and have exited since."""
        return [s.name for s in self.services if s.started and not s.running]

    def __enter__(self) -> EmbeddedStack:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def stack_process(work_dir: Path, env: dict[str, str], startup_timeout_s: float = 240.0
                  ) -> tuple[PythonService, dict[str, int]]:
    """``python -m deploy.embedded`` as one child service on free ports, its data in
    ``work_dir/data`` (the fault and soak benchmarks drive the stack this way, as a user
    would start it). Returns the (not yet started) service and its ports."""
    ports = {"port": free_port(), "broker": free_port(), "redis": free_port(), "metrics": free_port()}
    args = ["--port", str(ports["port"]), "--broker-port", str(ports["broker"]),
            "--redis-port", str(ports["redis"]), "--worker-metrics-port", str(ports["metrics"]),
            "--data-dir", str(work_dir / "data")]
    service = PythonService("stack", "deploy.embedded", args, ports["port"], "/readyz", work_dir, env,
                            startup_timeout_s=startup_timeout_s)
    return service, ports


def main() -> int:
    setup_logging()
    settings = load_settings(StackSettings)
    print("stack settings: " + json.dumps(masked(settings), sort_keys=True), flush=True)

    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stack = EmbeddedStack(settings)
    stack.start()
    print(f"\nCBERL live is running: open {stack.url}  (Ctrl-C stops everything)\n"
          f"logs: {settings.data_dir}/*/*.log", flush=True)
    try:
        while not stopping:
            try:
                stack.supervise()
            except GaveUp as exc:
                print(f"error: {exc}; stopping the stack", file=sys.stderr)
                return 1
            time.sleep(0.2)
    finally:
        print("stopping ...", flush=True)
        stack.stop()
        print("stopped.", flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main, user_errors=(ServiceError, TopicError))
