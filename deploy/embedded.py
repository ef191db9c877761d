"""The embedded default: the whole system on one machine, on 127.0.0.1, in one command.

``python -m deploy.embedded`` (what ``deploy/run.sh`` runs) starts, as child processes,
the tansu broker and redis-server, creates the topics, then a recognizer worker and the
streamer with the bundled default model; it waits until each answers, prints the page's
URL, and on Ctrl-C (or SIGTERM) stops them in reverse order, so no process is left behind
and every port is freed. A port already in use is an error before anything starts.

Settings: ``CBERL_STACK_*`` environment variables or the flags below (``--help``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import secrets
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType, TracebackType

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.events import DEAD_LETTER_TOPIC, EMOTIONS_TOPIC, UTTERANCES_TOPIC
from workers.services import HOST, ChildService, RedisServer, ServiceError, TansuBroker, ensure_topics

log = logging.getLogger("deploy.embedded")

ROOT = Path(__file__).resolve().parents[1]


class StackSettings(BaseSettings):
    """Ports, paths and model of the embedded stack (all services bind 127.0.0.1)."""

    model_config = SettingsConfigDict(env_prefix="CBERL_STACK_")

    port: int = Field(8080, ge=1, le=65535, description="the streamer: web page and API")
    broker_port: int = Field(9092, ge=1, le=65535, description="tansu (Kafka protocol)")
    redis_port: int = Field(6379, ge=1, le=65535, description="redis-server")
    worker_metrics_port: int = Field(9100, ge=1, le=65535, description="the worker's /metrics")
    data_dir: Path = Field(ROOT / ".cache" / "stack", description="logs and Redis data")
    model_dir: Path | None = Field(None, description="model directory; default: the bundled model")
    partitions: int = Field(4, ge=1, description="partitions of the utterances/emotions topics")
    token_secret: SecretStr | None = Field(None, description="token signing key; random when unset")
    startup_timeout_s: float = Field(120.0, gt=0)


class PythonService(ChildService):
    """``python -m MODULE ARGS`` as a child service, ready when ``ready_path`` answers 200."""

    def __init__(self, name: str, module: str, args: list[str], port: int, ready_path: str,
                 data_dir: Path, env: dict[str, str], startup_timeout_s: float) -> None:
        super().__init__(port, data_dir, startup_timeout_s)
        self.name = name
        self.log_path = self.data_dir / f"{name}.log"
        self.module, self.args, self.ready_path, self.env = module, args, ready_path, env

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, *self.args]

    def environment(self) -> dict[str, str]:
        return self.env

    def is_ready(self) -> bool:
        with contextlib.suppress(urllib.error.URLError, OSError):
            with urllib.request.urlopen(f"http://{HOST}:{self.port}{self.ready_path}", timeout=2) as r:
                return r.status == 200
        return False


class EmbeddedStack:
    """Broker, Redis, one worker and the streamer; a context manager that cleans up."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        secret = (settings.token_secret.get_secret_value() if settings.token_secret
                  else secrets.token_urlsafe(32))
        data = settings.data_dir
        timeout = settings.startup_timeout_s
        self.broker = TansuBroker(settings.broker_port, data / "tansu")
        self.redis = RedisServer(settings.redis_port, data / "redis")
        # Secrets and model paths travel by environment, never on a command line (ps shows it).
        common = {"CBERL_LOG_JSON": "false"}
        if settings.model_dir is not None:
            common["CBERL_MODEL_DIR"] = str(settings.model_dir)
        self.worker = PythonService(
            "worker", "workers",
            ["--broker-bootstrap-servers", self.broker.bootstrap_servers, "--broker-profile", "tansu",
             "--redis-url", self.redis.url, "--partitions", str(settings.partitions),
             "--metrics-port", str(settings.worker_metrics_port)],
            settings.worker_metrics_port, "/metrics", data / "worker", common, timeout)
        self.streamer = PythonService(
            "streamer", "streamer",
            ["--host", HOST, "--port", str(settings.port),
             "--broker-bootstrap-servers", self.broker.bootstrap_servers, "--broker-profile", "tansu",
             "--utterances-topic-partitions", str(settings.partitions), "--redis-url", self.redis.url],
            settings.port, "/readyz", data / "streamer", {**common, "CBERL_TOKEN_SECRET": secret}, timeout)
        self.services: list[ChildService] = [self.broker, self.redis, self.worker, self.streamer]

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
            asyncio.run(ensure_topics(self.broker.bootstrap_servers, {
                UTTERANCES_TOPIC: self.settings.partitions, EMOTIONS_TOPIC: self.settings.partitions,
                DEAD_LETTER_TOPIC: 1}))
            self.worker.start()
            self.streamer.start()
        except BaseException:
            self.stop()
            raise
        log.info("stack up in %.1f s", time.monotonic() - started)

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


def _settings(argv: list[str] | None) -> StackSettings:
    parser = argparse.ArgumentParser(prog="python -m deploy.embedded", description=__doc__.splitlines()[0],
                                     argument_default=argparse.SUPPRESS)
    for name, field in StackSettings.model_fields.items():
        if name != "token_secret":  # env only: CBERL_STACK_TOKEN_SECRET
            parser.add_argument("--" + name.replace("_", "-"), dest=name, help=field.description)
    return StackSettings(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = _settings(argv)
    except ValidationError as exc:
        first = exc.errors()[0]
        print(f"error: invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}", file=sys.stderr)
        return 2
    shown = settings.model_dump(mode="json")
    shown["token_secret"] = "***" if settings.token_secret else "(random)"
    print("stack settings: " + json.dumps(shown, sort_keys=True), flush=True)

    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stack = EmbeddedStack(settings)
    try:
        stack.start()
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\nCBERL live is running: open {stack.url}  (Ctrl-C stops everything)\n"
          f"logs: {settings.data_dir}/*/*.log", flush=True)
    try:
        while not stopping:
            dead = stack.dead()
            if dead:
                print(f"error: {', '.join(dead)} exited; stopping the stack (see its log in "
                      f"{settings.data_dir})", file=sys.stderr)
                return 1
            time.sleep(0.5)
    finally:
        print("stopping ...", flush=True)
        stack.stop()
        print("stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
