"""A supervised embedded stack: the worker SIGKILLed mid-call is restarted, the call goes
on, and its later utterances get final labels; a SIGKILLed streamer is replaced by its warm
spare and still serves the call's stream; no secret is on any command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil

from deploy.callcheck import snapshot, stack_children
from deploy.services import free_port
from deploy.speech import timeline_wav
from tests.fixtures_services import ServiceProcess
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = [(0.5, "I am really happy to see you."), (5.0, "But I hate waiting in the rain."),
          (16.0, "This is the best day of my life."), (21.0, "Why would you do that to me?")]


def test_a_killed_worker_is_restarted_and_later_utterances_get_final_labels(tmp_path: Path) -> None:
    ports = {"port": free_port(), "broker": free_port(), "redis": free_port(), "metrics": free_port()}
    data = tmp_path / "data"
    stack = ServiceProcess("stack", "deploy.embedded",
                           ["--port", str(ports["port"]), "--broker-port", str(ports["broker"]),
                            "--redis-port", str(ports["redis"]),
                            "--worker-metrics-port", str(ports["metrics"]),
                            "--data-dir", str(data)],
                           ports["port"], "/readyz", tmp_path, startup_timeout_s=180)
    stack.start()
    try:
        assert stack.pid is not None
        every = {"tansu", "redis", "worker", "worker_standby", "streamer", "streamer_standby"}
        # the streamer's spare is spawned just after the streamer answers /readyz
        children = wait_until(lambda: (found := stack_children(stack.pid)).keys() == every and found,
                              30, interval_s=0.2, message=lambda: str(set(stack_children(stack.pid))))
        spare = children["worker_standby"]
        environ = children["streamer"].environ()
        secrets_ = [environ["CBERL_EVENT_SECRET"], environ["CBERL_TOKEN_SECRET"],
                    environ["CBERL_REDIS_URL"].split(":")[2].split("@")[0]]
        assert children["worker"].environ()["CBERL_EVENT_SECRET"] == secrets_[0]
        for proc in children.values():
            assert not any(s in " ".join(proc.cmdline()) for s in secrets_), proc.cmdline()

        wav = tmp_path / "speech.wav"
        timeline_wav(wav, SCRIPT, 26.0, tmp_path)
        server = f"http://127.0.0.1:{ports['port']}"
        join = subprocess.Popen(
            [sys.executable, "-m", "streamer.join", "--server", server, "--create", "--name", "Ann",
             "--wav", str(wav), "--end", "--grace-s", "4"],
            cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        assert join.stdout is not None
        header = json.loads(join.stdout.readline())
        call_id, token = header["call_id"], header["subscriber_token"]

        # mid-call: the first utterance is labelled, then the worker dies
        wait_until(lambda: snapshot(server, call_id, token).emotions, 60, interval_s=0.5,
                   message="no label before the kill")
        old_worker = children["worker"]
        old_worker.kill()
        old_worker.wait(10)

        def restarted() -> bool:
            status = json.loads((data / "status.json").read_text())
            return status["worker"]["restarts"] == 1 and status["worker"]["up"]

        wait_until(restarted, 120, interval_s=0.5, message="the stack did not restart the worker")
        # the warm spare took over (no cold start), and a new spare is loading behind it
        assert stack_children(stack.pid)["worker"].pid == spare.pid
        assert "promoting the standby" in stack.output()
        wait_until(lambda: "worker_standby" in stack_children(stack.pid), 30, interval_s=0.5,
                   message="no new standby after the promotion")
        assert stack.running  # the stack did not stop itself
        assert 'cberl_stack_restarts_total{service="worker"} 1' in (data / "status.prom").read_text()

        out, err = join.communicate(timeout=120)
        assert join.returncode == 0, err[-2000:]

        def all_final():
            snap = snapshot(server, call_id, token)
            finals = snap.finals()
            late = [t for t in snap.transcripts.values() if t["start_ms"] >= 15_000]
            ok = late and all(t["utterance_id"] in finals for t in snap.transcripts.values())
            return snap if ok else None

        snap = wait_until(all_final, 90, interval_s=1,
                          message="utterances after the worker's restart were not all labelled final")
        assert len(snap.transcripts) >= 3
        assert all(n == 1 for n in snap.finals().values())  # no final label twice
        assert "worker exited" in stack.output() and "worker restarted" in stack.output()

        # the streamer dies: its spare serves the same port and the call's stream again
        streamer_spare = stack_children(stack.pid)["streamer_standby"]
        stack_children(stack.pid)["streamer"].kill()

        def streamer_back() -> bool:
            status = json.loads((data / "status.json").read_text())["streamer"]
            return status["restarts"] == 1 and status["up"]

        wait_until(streamer_back, 60, interval_s=0.5, message="the stack did not restart the streamer")
        assert stack_children(stack.pid)["streamer"].pid == streamer_spare.pid
        assert snapshot(server, call_id, token).finals() == snap.finals()
    finally:
        stack.stop(timeout_s=60)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children.values())
