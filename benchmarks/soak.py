"""Soak: calls joining and leaving for ``--minutes`` on the embedded stack -> ``docs/soak.json``.

``python -m benchmarks.soak --minutes 20 [--max-calls 2]``: starts ``deploy.embedded`` on
free ports and keeps at most ``--max-calls`` two-party calls running (MELD dev dialogues
spoken by espeak-ng, ``streamer.join`` file clients; a new call starts when one ends,
both participants leave, one ends the call). Every ``--sample-s`` it samples the RSS and
open file descriptors of every process of the stack (the supervisor, tansu, redis-server,
the worker, the streamer) and the gauges (``streamer_active_calls``,
``streamer_active_participants``, ``cberl_worker_active_calls``, publish backlog).

Checks: after the warm-up (first ``--warmup-fraction`` of the run), RSS and fds of every
process grow at most 10% (mean of the last three samples vs the first three after
warm-up, among the samples with the run's most frequent participant count:
:func:`growth_at_like_load`); ``--rescore FILE`` recomputes that for a finished run;
the gauges return to 0 once the calls are over; every transcribed utterance has exactly
one final label (nothing lost, nothing duplicated); no child was restarted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.faults import ENV, MELD, _post, _wait  # noqa: E402
from cberl_model.cli import run_cli  # noqa: E402
from cberl_model.runtime import ConfigError  # noqa: E402
from deploy.callcheck import dialogue_wavs, meld_dialogues, score, snapshot, stack_children  # noqa: E402
from deploy.embedded import stack_process  # noqa: E402
from deploy.services import PythonService  # noqa: E402

GAUGES = ("streamer_active_calls", "streamer_active_participants", "streamer_publish_backlog",
          "cberl_worker_active_calls")


def _gauges(url: str) -> dict[str, float]:
    values: dict[str, float] = {}
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    for line in text.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in GAUGES and not line.startswith("#"):
            values[name] = values.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return values


def _sample(stack: PythonService) -> dict[str, dict[str, int]]:
    assert stack.pid is not None
    procs = {"supervisor": psutil.Process(stack.pid), **stack_children(stack.pid)}
    out = {}
    for name, proc in procs.items():
        try:
            with proc.oneshot():
                out[name] = {"rss_mb": round(proc.memory_info().rss / 2**20, 1), "fds": proc.num_fds(),
                             "pid": proc.pid}
        except psutil.Error:
            pass
    return out


class Call:
    def __init__(self, server: str, lines, wavs: dict[str, Path], work: Path, n: int) -> None:
        self.lines, self.server = lines, server
        created = _post(f"{server}/v1/calls", {"participants": list(wavs)})
        self.call_id, self.token = created["call_id"], created["subscriber_token"]
        self.procs = []
        for i, p in enumerate(created["participants"]):
            log = open(work / f"call{n}-{i}.log", "w")  # noqa: SIM115
            args = [sys.executable, "-m", "streamer.join", "--server", server, "--call", self.call_id,
                    "--token", p["token"], "--name", p["name"], "--wav", str(wavs[p["name"]]),
                    "--grace-s", "3" if i else "6"] + ([] if i else ["--end"])
            self.procs.append(subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                               env={**os.environ, **ENV}))

    def done(self) -> bool:
        return all(p.poll() is not None for p in self.procs)


def growth_at_like_load(samples: list[dict[str, Any]],
                        warm_from_s: float) -> tuple[dict[str, dict[str, Any]], float | None]:
    """Per process, RSS and descriptors after the warm-up: mean of the first three samples
    against the last three, among the samples taken with the run's most frequent number of
    connected participants (returned beside the rows).

    Each participant holds its own sockets (3 descriptors in the streamer), so samples
    taken with 3 and 4 participants differ by 3 however long the stack has run; comparing
    like loads keeps that from reading as a leak. The last sample (after the calls) is left
    out.
    """
    warm = [s for s in samples[:-1] if s["t_s"] >= warm_from_s]
    counts = [s.get("gauges", {}).get("streamer_active_participants") for s in warm]
    participants = max(set(counts), key=counts.count) if counts else None
    like = [s for s, c in zip(warm, counts, strict=True) if c == participants]
    growth: dict[str, dict[str, Any]] = {}
    for name in samples[0]["procs"] if samples else ():
        row: dict[str, Any] = {}
        for metric in ("rss_mb", "fds"):
            series = [s["procs"][name][metric] for s in like if name in s["procs"]]
            if len(series) < 2:
                continue
            first = sum(series[:3]) / len(series[:3])
            last = sum(series[-3:]) / len(series[-3:])
            row[metric] = {"after_warmup": round(first, 1), "end": round(last, 1),
                           "max": max(series),
                           "growth_pct": round(100 * (last - first) / max(first, 1e-9), 1)}
        growth[name] = row
    return growth, participants


MAX_REPORT_BYTES = 16 * 1024 * 1024
"""The largest soak report ``--rescore`` reads (a 20-minute run writes about 200 KB)."""


def flat_within_10pct(growth: dict[str, dict[str, Any]]) -> bool:
    """Whether no process's RSS or descriptors grew by more than 10 %."""
    return all(m["growth_pct"] <= 10.0 for row in growth.values() for m in row.values())


def rescore(path: Path, warmup_fraction: float) -> int:
    """Recompute a finished soak's growth rows from its samples (``--rescore FILE``).

    Raises:
        ConfigError: If the file is missing, larger than :data:`MAX_REPORT_BYTES` or not a
            soak report.
    """
    try:
        if path.stat().st_size > MAX_REPORT_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_REPORT_BYTES} bytes, not a soak report")
        report = json.loads(path.read_text())
        growth, participants = growth_at_like_load(report["samples"],
                                                   warmup_fraction * report["minutes"] * 60)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError,
            IndexError) as exc:
        raise ConfigError(f"{path}: not a soak report ({type(exc).__name__}: {exc})") from None
    report.update(growth_after_warmup=growth, growth_compared_at_participants=participants,
                  flat_within_10pct=flat_within_10pct(growth))
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("growth_after_warmup",
                                             "growth_compared_at_participants",
                                             "flat_within_10pct")}, indent=1))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--max-calls", type=int, default=2)
    parser.add_argument("--sample-s", type=float, default=30.0)
    parser.add_argument("--warmup-fraction", type=float, default=0.25)
    parser.add_argument("--dialogues", type=int, default=6, help="distinct dialogues, reused in turn")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "soak.json")
    parser.add_argument("--rescore", type=Path, metavar="FILE",
                        help="recompute the growth rows of a finished soak's JSON; runs nothing")
    args = parser.parse_args()
    if args.rescore:
        return rescore(args.rescore, args.warmup_fraction)
    work = Path(tempfile.mkdtemp(prefix="cberl-soak-"))
    stack, ports = stack_process(work, ENV)
    server = f"http://127.0.0.1:{ports['port']}"
    made = [dialogue_wavs(t, work / f"d{i}") for i, t in
            enumerate(meld_dialogues(MELD, args.dialogues, max_lines=6, skip=40))]
    samples: list[dict[str, Any]] = []
    finished: list[Call] = []
    running: list[Call] = []
    stack.start()
    t0 = time.monotonic()
    deadline = t0 + args.minutes * 60
    next_sample = t0
    n = 0
    refused = 0  # new calls refused with 503 by the gateway's admission control
    retry_at = t0
    try:
        while time.monotonic() < deadline or running:
            for call in [c for c in running if c.done()]:
                running.remove(call)
                finished.append(call)
            while time.monotonic() < deadline and len(running) < args.max_calls and \
                    time.monotonic() >= retry_at:
                wavs, lines = made[n % len(made)]
                try:
                    running.append(Call(server, lines, wavs, work, n))
                except urllib.error.HTTPError as exc:  # 503: admission control (ASR behind)
                    if exc.code != 503:
                        raise
                    refused += 1
                    retry_at = time.monotonic() + float(exc.headers.get("Retry-After") or 2)
                    break
                n += 1
            if time.monotonic() >= next_sample:
                samples.append({"t_s": round(time.monotonic() - t0), "procs": _sample(stack),
                                "gauges": {**_gauges(f"{server}metrics" if server.endswith("/") else
                                                     f"{server}/metrics"),
                                           **_gauges(f"http://127.0.0.1:{ports['metrics']}/metrics")},
                                "calls_started": n})
                print(json.dumps(samples[-1]), flush=True)
                next_sample += args.sample_s
            time.sleep(1)
        # calls over: let the worker finalise, then the gauges must read 0
        time.sleep(10)
        gauges_after = {}

        def zero() -> bool:
            gauges_after.update(_gauges(f"{server}/metrics"))
            gauges_after.update(_gauges(f"http://127.0.0.1:{ports['metrics']}/metrics"))
            return all(gauges_after.get(g, 1) == 0 for g in GAUGES)

        gauges_zero_after_s = _wait(zero, 120, 1.0)
        samples.append({"t_s": round(time.monotonic() - t0), "procs": _sample(stack), "gauges": gauges_after,
                        "calls_started": n})
        lost = duplicated = unlabelled = truths_lost = truths = utterances = 0
        exits = []
        for call in finished:
            snap = snapshot(server, call.call_id, call.token)
            sc = score(snap, [(ln.speaker, ln.text) for ln in call.lines])
            duplicated += sc.duplicated
            unlabelled += sc.unlabelled
            truths_lost += sc.lost
            truths += sc.truths
            utterances += sc.utterances
            exits += [p.returncode for p in call.procs]
        lost = unlabelled
        status = json.loads((work / "data" / "status.json").read_text())
    finally:
        stack.stop(timeout_s=60)

    growth, participants = growth_at_like_load(samples, args.warmup_fraction * args.minutes * 60)
    report = {
        "command": "python -m benchmarks.soak " + " ".join(sys.argv[1:]),
        "machine": f"{os.cpu_count()} CPU cores, shared with other work",
        "minutes": args.minutes, "max_concurrent_calls": args.max_calls, "calls": len(finished),
        "calls_refused_503": refused,
        "client_failures": sum(1 for e in exits if e != 0),
        "utterances": utterances, "final_labels_lost": lost, "final_labels_duplicated": duplicated,
        "truth_lines": truths, "truth_lines_not_recognised": truths_lost,
        "restarts": {k: v["restarts"] for k, v in status.items()},
        "gauges_after": gauges_after, "gauges_zero_after_s": gauges_zero_after_s,
        "growth_after_warmup": growth, "growth_compared_at_participants": participants,
        "flat_within_10pct": flat_within_10pct(growth),
        "samples": samples,
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1))
    return 0


if __name__ == "__main__":
    run_cli(main)
