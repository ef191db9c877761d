"""Fault injection into live calls on the supervised embedded stack -> ``docs/faults.json``.

``python -m benchmarks.faults [--calls 2] [--fault-at-s 20]``: starts ``deploy.embedded``
on free ports, then for each scenario (a baseline without fault, then: SIGKILL the worker;
restart redis-server (SIGTERM: it flushes its append-only file, the supervisor restarts
it); SIGKILL the broker (tansu, memory-only); SIGKILL the streamer; SIGSTOP one
participant's client for 5 s) runs ``--calls`` two-party calls of MELD dev dialogues spoken
by espeak-ng (``streamer.join`` file clients, one live SSE subscriber per call that
reconnects from its last entry id), injects the fault ``--fault-at-s`` into the calls,
and reports what the subscribers saw:

- ``lost``: truth lines (MELD utterances) with no final label; split into spoken before
  the fault, during the outage (fault -> recovery) and after recovery;
- ``duplicated``: utterances that got a final label more than once;
- ``recovery_s``: fault -> first emotion event any subscriber receives afterwards;
  ``participants_back_s`` (streamer restart): fault -> every participant in the call again;
- ``calls_dropped``: clients that exited with an error or calls that never ended.

The baseline row is what ASR/VAD alone miss (espeak-ng through Whisper tiny.en).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploy.callcheck import Line, dialogue_wavs, meld_dialogues, score, snapshot, stack_children  # noqa: E402
from deploy.embedded import stack_process  # noqa: E402
from deploy.services import PythonService  # noqa: E402

MELD = ROOT.parent / "shared" / "data" / "meld" / "dev_sent_emo.csv"
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "PYTHONPATH": str(ROOT)}
SCENARIOS = ["baseline", "worker_kill", "redis_restart", "broker_restart", "streamer_restart",
             "client_freeze"]


class Follower(threading.Thread):
    """One live SSE subscriber of a call; reconnects from its last entry id."""

    def __init__(self, server: str, call_id: str, token: str) -> None:
        super().__init__(daemon=True)
        self.server, self.call_id, self.token = server, call_id, token
        self.events: list[tuple[float, str, dict[str, Any]]] = []  # (arrival, kind, data)
        self.last_id = "0"
        self.reconnects = 0
        self.stopping = False

    def run(self) -> None:
        while not self.stopping:
            url = f"{self.server}/v1/calls/{self.call_id}/emotions?token={self.token}&from={self.last_id}"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    kind, entry = "", ""
                    for raw in response:
                        line = raw.decode().rstrip("\n")
                        if line.startswith("id: "):
                            entry = line[4:]
                        elif line.startswith("event: "):
                            kind = line[7:]
                        elif line.startswith("data: ") and kind in ("utterance", "emotion"):
                            self.events.append((time.time(), kind, json.loads(line[6:])))
                            self.last_id = entry or self.last_id
                        if self.stopping:
                            return
            except (OSError, ValueError):
                pass
            if not self.stopping:
                self.reconnects += 1
                time.sleep(0.5)


def _post(url: str, body: dict[str, Any], patience_s: float = 0.0) -> dict[str, Any]:
    """POST JSON; a 503 (admission control) is retried after Retry-After for ``patience_s``."""
    deadline = time.monotonic() + patience_s
    while True:
        request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or time.monotonic() >= deadline:
                raise
            time.sleep(float(exc.headers.get("Retry-After") or 2))


def _participants(server: str, call_id: str, token: str) -> int:
    request = urllib.request.Request(f"{server}/v1/calls/{call_id}",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return len(json.loads(response.read())["participants"])
    except (OSError, ValueError):
        return 0


def _wait(predicate, timeout_s: float, interval_s: float = 0.2) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval_s)
    return None


def run_scenario(stack: PythonService, server: str, name: str, dialogues: list[list[Line]],
                 wavs: list[dict[str, Path]], fault_at_s: float, work: Path) -> dict[str, Any]:
    calls, joins, followers = [], [], []
    for d, speaker_wavs in enumerate(wavs):
        speakers = list(speaker_wavs)
        created = _post(f"{server}/v1/calls", {"participants": speakers}, patience_s=60)
        calls.append(created)
        follower = Follower(server, created["call_id"], created["subscriber_token"])
        follower.start()
        followers.append(follower)
        for i, participant in enumerate(created["participants"]):
            log = open(work / f"{name}-{d}-{i}.log", "w")  # noqa: SIM115 (closed with the process)
            args = [sys.executable, "-m", "streamer.join", "--server", server, "--call", created["call_id"],
                    "--token", participant["token"], "--name", participant["name"],
                    "--wav", str(speaker_wavs[participant["name"]]), "--grace-s", "3" if i else "6"]
            joins.append(subprocess.Popen(args + ([] if i else ["--end"]), cwd=ROOT, stdout=log,
                                          stderr=subprocess.STDOUT, env={**os.environ, **ENV}))
    started = time.time()
    time.sleep(fault_at_s)
    fault_t = time.time()
    result: dict[str, Any] = {"scenario": name, "calls": len(calls)}
    assert stack.pid is not None
    children = stack_children(stack.pid)
    if name == "worker_kill":
        children["worker"].kill()
    elif name == "redis_restart":
        children["redis"].terminate()
    elif name == "broker_restart":
        children["tansu"].kill()
    elif name == "streamer_restart":
        children["streamer"].kill()
    elif name == "client_freeze":
        joins[0].send_signal(signal.SIGSTOP)
        time.sleep(5)
        joins[0].send_signal(signal.SIGCONT)
    if name == "streamer_restart":
        back = _wait(lambda: all(_participants(server, c["call_id"], c["subscriber_token"]) == 2
                                 for c in calls), 90)
        result["participants_back_s"] = None if back is None else round(time.time() - fault_t, 1)

    def first_label_after() -> float | None:
        times = [t for f in followers for t, kind, _ in f.events if kind == "emotion" and t > fault_t]
        return min(times) if times else None

    exits = [j.wait(300) for j in joins]
    ended_at = time.time()
    for c in calls:  # every transcribed utterance final (or give up after 60 s)
        _wait(lambda c=c: (lambda s: all(u in s.finals() for u in s.transcripts))(
            snapshot(server, c["call_id"], c["subscriber_token"])), 60, 1.0)
    time.sleep(2)
    for f in followers:
        f.stopping = True
    recovered = first_label_after()
    result["recovery_s"] = None if name == "baseline" or recovered is None else round(recovered - fault_t, 1)
    outage_end = fault_t + (result["recovery_s"] or 0.0)
    if name == "streamer_restart" and result.get("participants_back_s") is not None:
        outage_end = max(outage_end, fault_t + result["participants_back_s"])
    if name == "client_freeze":
        outage_end = fault_t + 5
    totals = {"truths": 0, "lost": 0, "lost_before_fault": 0, "lost_during_outage": 0,
              "lost_after_recovery": 0, "duplicated": 0, "unlabelled": 0, "utterances": 0}
    for c, f, lines in zip(calls, followers, dialogues, strict=True):
        live = _follower_snapshot(f)
        sc = score(live, [(ln.speaker, ln.text) for ln in lines])
        for key in ("truths", "lost", "duplicated", "unlabelled", "utterances"):
            totals[key] += getattr(sc, key)
        for i in sc.lost_index:
            spoken = started + lines[i].start_s
            phase = ("lost_before_fault" if spoken < fault_t else
                     "lost_during_outage" if spoken < outage_end + 1.0 else "lost_after_recovery")
            totals[phase] += 1
        replay = snapshot(server, c["call_id"], c["subscriber_token"])
        totals.setdefault("replay_lost", 0)
        totals["replay_lost"] += score(replay, [(ln.speaker, ln.text) for ln in lines]).lost
    result.update(totals)
    result["sse_reconnects"] = sum(f.reconnects for f in followers)
    result["calls_dropped"] = sum(1 for code in exits if code != 0)
    result["client_exit_codes"] = exits
    result["calls_s"] = round(ended_at - started, 1)
    return result


def _follower_snapshot(f: Follower):
    from deploy.callcheck import Snapshot

    snap = Snapshot()
    for _, kind, data in f.events:
        if kind == "utterance":
            snap.transcripts[data["utterance_id"]] = data
        else:
            snap.emotions.append(data)
    return snap


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--fault-at-s", type=float, default=20.0)
    parser.add_argument("--scenarios", nargs="*", default=SCENARIOS, choices=SCENARIOS)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "faults.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cberl-faults-"))
    stack, ports = stack_process(work, ENV)
    server = f"http://127.0.0.1:{ports['port']}"
    turns = meld_dialogues(MELD, args.calls * len(args.scenarios), max_lines=8)
    results = []
    stack.start()
    try:
        for k, name in enumerate(args.scenarios):
            batch = turns[k * args.calls:(k + 1) * args.calls]
            made = [dialogue_wavs(t, work / f"{name}-{i}", min_total_s=args.fault_at_s + 25)
                    for i, t in enumerate(batch)]
            _wait(lambda: urllib.request.urlopen(f"{server}/readyz", timeout=2).status == 200, 60)
            row = run_scenario(stack, server, name, [m[1] for m in made], [m[0] for m in made],
                               args.fault_at_s, work)
            status = json.loads((work / "data" / "status.json").read_text())
            row["restarts"] = {k2: v["restarts"] for k2, v in status.items()}
            print(json.dumps(row), flush=True)
            results.append(row)
    finally:
        stack.stop(timeout_s=60)
    report = {"command": "python -m benchmarks.faults " + " ".join(sys.argv[1:]),
              "machine": f"{os.cpu_count()} CPU cores, shared", "calls_per_scenario": args.calls,
              "fault_at_s": args.fault_at_s, "results": results}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
