"""The README's run command: ``python -m deploy.embedded`` brings up broker, Redis, worker
and streamer on 127.0.0.1; a call streamed into it is labelled; the Kafka ``emotions``
topic and the SSE subscription deliver the same events; Ctrl-C leaves nothing running."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from deploy.services import free_port
from deploy.speech import timeline_wav
from tests.fixtures_services import ServiceProcess
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def _stack_args(ports: dict[str, int], data_dir: Path) -> list[str]:
    return ["--port", str(ports["port"]), "--broker-port", str(ports["broker"]), "--redis-port",
            str(ports["redis"]), "--worker-metrics-port", str(ports["metrics"]), "--data-dir", str(data_dir)]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _speech(path: Path) -> None:
    """Two sentences with a pause between them: two utterances."""
    timeline_wav(path, [(0.5, "I am really happy to see you."), (3.5, "But I hate waiting in the rain.")],
                 7.5, path.parent)


def final_view(events: list[dict]) -> dict[str, tuple[int, str, bool]]:
    """What a subscriber ends up with: the highest revision per utterance."""
    view: dict[str, tuple[int, str, bool]] = {}
    for e in events:
        if e["utterance_id"] not in view or view[e["utterance_id"]][0] < e["revision"]:
            view[e["utterance_id"]] = (e["revision"], e["label"], e["final"])
    return view


def test_a_port_in_use_is_a_clear_error_and_starts_nothing(tmp_path: Path) -> None:
    ports = {"port": free_port(), "broker": free_port(), "redis": free_port(), "metrics": free_port()}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports["redis"]))
        busy.listen()
        proc = subprocess.run([sys.executable, "-m", "deploy.embedded", *_stack_args(ports, tmp_path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"port already in use: redis 127.0.0.1:{ports['redis']}" in proc.stderr
    assert not any(_listening(ports[k]) for k in ("port", "broker", "metrics"))


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[ServiceProcess, dict[str, int], Path]]:
    """``python -m deploy.embedded``, up once the streamer it starts last answers ``/readyz``."""
    ports = {"port": free_port(), "broker": free_port(), "redis": free_port(), "metrics": free_port()}
    service = ServiceProcess("stack", "deploy.embedded", _stack_args(ports, tmp_path / "data"),
                             ports["port"], "/readyz", tmp_path, startup_timeout_s=180)
    service.start()
    yield service, ports, tmp_path
    service.stop(timeout_s=60)  # SIGTERM: the stack stops its own children first


def test_call_is_labelled_and_both_subscriptions_agree_then_ctrl_c_cleans_up(stack) -> None:
    service, ports, tmp_path = stack
    assert service.pid is not None
    children = psutil.Process(service.pid).children(recursive=True)
    assert {"tansu", "redis-server"} <= {c.name() for c in children}

    wav = tmp_path / "speech.wav"
    _speech(wav)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    join = subprocess.run([sys.executable, "-m", "streamer.join", "--server", f"http://127.0.0.1:{ports['port']}",
                           "--create", "--name", "Ann", "--wav", str(wav), "--end", "--grace-s", "8"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert join.returncode == 0, join.stderr[-2000:]
    header = json.loads(join.stdout.splitlines()[0])
    call_id, token = header["call_id"], header["subscriber_token"]

    url = (f"http://127.0.0.1:{ports['port']}/v1/calls/{call_id}/emotions?token={token}"
           f"&follow=false&types=emotion")

    def all_final() -> list[dict] | None:
        with urllib.request.urlopen(url, timeout=30) as response:
            events = [json.loads(line[6:]) for line in response.read().decode().splitlines()
                      if line.startswith("data: ")]
        view = final_view(events)
        return events if view and all(final for _, _, final in view.values()) else None

    # the worker finalises the call shortly after it ended
    sse = wait_until(all_final, 60, interval_s=1, message="the call's labels never all turned final")
    kafka = subprocess.run([sys.executable, "-m", "workers.subscribe", "--bootstrap-servers",
                            f"127.0.0.1:{ports['broker']}", "--call", call_id, "--from-beginning",
                            "--idle-exit-s", "3"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert kafka.returncode == 0, kafka.stderr
    topic = [json.loads(line) for line in kafka.stdout.splitlines()]

    assert len(final_view(sse)) >= 2  # two sentences, two utterances at least
    assert final_view(sse) == final_view(topic)
    assert all(final for _, _, final in final_view(sse).values())

    service.send_signal(signal.SIGINT)
    assert service.wait(timeout_s=60) == 0
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    assert not any(_listening(p) for p in ports.values())
