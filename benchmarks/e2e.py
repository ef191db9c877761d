"""End-to-end latency, accuracy and loss of live calls, as a subscriber sees them.

For each policy (``--policies``: settings passed to the stack by ``CBERL_*`` environment)
one embedded stack is started as the README starts it (``deploy.embedded.EmbeddedStack``:
tansu, redis-server, a worker and the streamer, on free ports of 127.0.0.1). For each
level N (``--levels``) and each policy, interleaved so load from other jobs hits them
alike, N two-party calls run at once:

- each call is one MELD **dev** dialogue with two speakers (``--dialogues`` of them,
  cycled), spoken by espeak-ng (``deploy.speech.say``), laid on the call timeline with
  turn-taking gaps of a real call (250-600 ms between speakers, 500-900 ms between two
  utterances of one speaker; seeded), one WAV per speaker;
- each participant is a ``python -m streamer.join`` process streaming its WAV in real time;
  call i starts i seconds after the first (calls arrive; admission control sees them);
- one SSE subscriber per call (``GET /v1/calls/{id}/emotions``) records when each
  transcript and emotion event arrives.

Reported per policy and N: revision-0 and final latency p50/p95/p99 (arrival at the
subscriber minus the utterance's ``end_of_speech_at``), transcript WER against the script,
live utterances overlapping each truth utterance, truth utterances no live utterance with a
final label overlaps (lost), calls
refused (503) and client exit codes, streamer CPU (cores), and agreement of the live final
labels with the offline model's labels on the gold text (each truth utterance takes the
label of the live utterance that overlaps it most).

Bounded: ``--levels`` and ``--dialogues`` choose the work, every wait has a timeout, all
on loopback. Writes ``docs/e2e.json`` (after every level), ``docs/e2e.png`` and ``docs/e2e.md``.

Usage: ``python benchmarks/e2e.py --levels 1 2 4 8 12 --policies baseline segment turn``
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploy.embedded import EmbeddedStack, StackSettings  # noqa: E402
from deploy.services import free_port  # noqa: E402
from deploy.speech import RATE, say, word_errors, words, write_wav  # noqa: E402

MELD_DEV = ROOT.parent / "shared" / "data" / "meld" / "dev_sent_emo.csv"
POLICIES: dict[str, dict[str, str]] = {
    # today's (revision-0) policy: faster-whisper's 30 s window, one segment per call, VAD segments
    "baseline": {"CBERL_ASR_WINDOW_S": "30", "CBERL_ASR_MAX_BATCH": "1", "CBERL_UTTERANCE_UNIT": "segment",
                 "CBERL_CAPACITY_MAX_BACKLOG_S": "100000", "CBERL_CAPACITY_MAX_LOOP_LAG_MS": "100000",
                 "CBERL_CAPACITY_MAX_ASR_UTILIZATION": "1.0", "CBERL_ASR_DEGRADE_BACKLOG_S": "100000",
                 "CBERL_ASR_SPECULATE_MS": "0", "CBERL_MAX_NO_SPEECH_PROB": "0.6"},
    # the new defaults (10 s window, batching, admission control), VAD segments
    "segment": {"CBERL_UTTERANCE_UNIT": "segment"},
    # the new defaults with turns as the unit of analysis
    "turn": {"CBERL_UTTERANCE_UNIT": "turn"},
}
LEAD_S, TAIL_S = 1.0, 2.5
STAGGER_S = 1.0


# -- the script ---------------------------------------------------------------------------

@dataclass
class Truth:
    index: int
    speaker: str          # "A" or "B"
    text: str
    gold: str
    start_ms: int = 0     # on the speaker's WAV
    end_ms: int = 0


@dataclass
class Dialogue:
    dialogue_id: int
    truths: list[Truth]
    wavs: dict[str, Path] = field(default_factory=dict)
    offline: dict[int, str] = field(default_factory=dict)


def _clean(text: str) -> str:
    return text.replace("\u2019", "'").replace("\u0092", "'").replace("\u2026", "...").strip()


def meld_dialogues(n: int) -> list[Dialogue]:
    """The first ``n`` dev dialogues with exactly two speakers and 5-12 utterances."""
    by_id: dict[int, list[dict[str, str]]] = defaultdict(list)
    with open(MELD_DEV, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_id[int(row["Dialogue_ID"])].append(row)
    out = []
    for did, rows in sorted(by_id.items()):
        speakers = list(dict.fromkeys(r["Speaker"] for r in rows))
        if len(speakers) != 2 or not 5 <= len(rows) <= 12:
            continue
        if any(not words(_clean(r["Utterance"])) for r in rows):
            continue
        truths = [Truth(i, "AB"[speakers.index(r["Speaker"])], _clean(r["Utterance"]), r["Emotion"])
                  for i, r in enumerate(rows)]
        out.append(Dialogue(did, truths))
        if len(out) >= n:
            break
    return out


def synthesize(dialogue: Dialogue, work: Path, seed: int) -> None:
    """Lay the dialogue on a timeline (turn-taking gaps) and write one WAV per speaker."""
    rng = random.Random(seed * 1000 + dialogue.dialogue_id)
    audio = {s: [] for s in "AB"}
    cursor = int(LEAD_S * RATE)
    previous: str | None = None
    placed = []
    for t in dialogue.truths:
        if previous is not None:
            gap_s = rng.uniform(0.25, 0.6) if t.speaker != previous else rng.uniform(0.5, 0.9)
            cursor += int(gap_s * RATE)
        speech = say(t.text, work)
        placed.append((t, cursor, speech))
        t.start_ms, t.end_ms = cursor * 1000 // RATE, (cursor + speech.size) * 1000 // RATE
        cursor += speech.size
        previous = t.speaker
    total = cursor + int(TAIL_S * RATE)
    for s in "AB":
        track = np.zeros(total, np.float32)
        for t, start, speech in placed:
            if t.speaker == s:
                track[start:start + speech.size] = speech
        audio[s] = track
        dialogue.wavs[s] = write_wav(work / f"d{dialogue.dialogue_id}-{s}.wav", track)


def offline_labels(dialogues: list[Dialogue]) -> None:
    """The offline model's final labels on the gold text (the reference for live labels)."""
    from cberl_model.inference import EmotionRecognizer

    recognizer = EmotionRecognizer.load()
    for d in dialogues:
        state = recognizer.open_call(f"offline-{d.dialogue_id}")
        labels: dict[str, str] = {}
        from cberl_model.inference import UtteranceInput

        for t in d.truths:
            item = UtteranceInput(str(t.index), t.speaker, text=t.text)
            state, updates = recognizer.add_utterance(state, item)
            labels.update({u.utterance_id: u.label for u in updates})
        state, updates = recognizer.end_call(state)
        labels.update({u.utterance_id: u.label for u in updates})
        d.offline = {int(k): v for k, v in labels.items()}


# -- one call ------------------------------------------------------------------------------



async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, dict]:
    async with session.post(url, json=body) as r:
        return r.status, await r.json(content_type=None)


async def _subscribe(session: aiohttp.ClientSession, url: str, call_id: str, token: str,
                     log: dict[str, Any], stop: asyncio.Event) -> None:
    """Read the call's SSE stream, stamping every entry with its arrival (epoch ms)."""
    async with session.get(f"{url}/v1/calls/{call_id}/emotions", params={"token": token, "from": "0"},
                           timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as r:
        kind = None
        async for raw in r.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind in ("utterance", "emotion"):
                data = json.loads(line[6:])
                data["_arrived_ms"] = time.time() * 1000
                log[kind + "s"].append(data)
            if stop.is_set():
                return


async def run_call(url: str, dialogue: Dialogue, index: int, deadline_s: float) -> dict[str, Any]:
    """One two-party call of ``dialogue``; what its subscriber saw and how the clients ended."""
    log: dict[str, Any] = {"utterances": [], "emotions": [], "exit_codes": [], "refused": None}
    async with aiohttp.ClientSession() as session:
        status, created = await _post(session, f"{url}/v1/calls", {"participants": ["A", "B"]})
        if status != 201:
            log["refused"] = {"status": status, "error": created.get("error")}
            return log
        call_id = created["call_id"]
        tokens = {p["name"]: p["token"] for p in created["participants"]}
        speaker_of = {p["speaker_id"]: p["name"] for p in created["participants"]}
        stop = asyncio.Event()
        sub = asyncio.create_task(_subscribe(session, url, call_id, created["subscriber_token"], log, stop),
                                  name=f"sse-{index}")
        procs = [await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streamer.join", "--server", url, "--call", call_id, "--token", tokens[s],
            "--name", s, "--wav", str(dialogue.wavs[s]), "--grace-s", "1.0",
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(ROOT)) for s in "AB"]
        offsets: dict[str, int] = {}

        async def read_offsets() -> None:
            for _ in range(40):
                await asyncio.sleep(0.5)
                async with session.get(f"{url}/v1/calls/{call_id}",
                                       headers={"Authorization": f"Bearer {tokens['A']}"}) as r:
                    if r.status != 200:
                        continue
                    body = await r.json()
                for p in body.get("participants", []):
                    if p.get("media_offset_ms") is not None:
                        offsets[speaker_of.get(p["speaker_id"], "?")] = p["media_offset_ms"]
                if len(offsets) == 2:
                    return

        offset_task = asyncio.create_task(read_offsets(), name=f"offsets-{index}")
        errors = []
        for p in procs:
            try:
                _, err = await asyncio.wait_for(p.communicate(), deadline_s)
            except TimeoutError:
                p.kill()
                _, err = await p.communicate()
            log["exit_codes"].append(p.returncode)
            if p.returncode:
                errors.append(err.decode()[-300:])
        log["client_errors"] = errors
        await offset_task
        status, ended = await _post(session, f"{url}/v1/calls/{call_id}/end", {"token": tokens["A"]})
        last_seq = ended.get("last_seq", -1) if status == 200 else None
        # wait until every published utterance has a final label (the call end finalises)
        until = time.monotonic() + 45
        while time.monotonic() < until:
            finals = {e["utterance_id"] for e in log["emotions"] if e.get("final")}
            if last_seq is not None and len(finals) >= last_seq + 1 and \
                    len(log["utterances"]) >= last_seq + 1:
                break
            await asyncio.sleep(0.25)
        stop.set()
        sub.cancel()
        await asyncio.gather(sub, return_exceptions=True)
    log["offsets"] = offsets
    log["speaker_of"] = speaker_of
    log["last_seq"] = last_seq
    return log


def score_call(dialogue: Dialogue, log: dict[str, Any]) -> dict[str, Any]:
    """Latencies, WER, segments per truth, lost truths and label agreement of one call."""
    utts = {u["utterance_id"]: u for u in log["utterances"]}
    rev0, final, label, eos_of = {}, {}, {}, {}
    for e in sorted(log["emotions"], key=lambda e: e["_arrived_ms"]):
        uid = e["utterance_id"]
        if e.get("latency_ms") is not None and uid not in eos_of:
            # the transcript entry has no end_of_speech_at: the worker's event gives it back
            eos_of[uid] = e["emitted_at"] - e["latency_ms"]
        if e["revision"] == 0 and uid not in rev0:
            rev0[uid] = e["_arrived_ms"]
        if e.get("final") and uid not in final:
            final[uid] = e["_arrived_ms"]
            label[uid] = e["label"]
    lat0, latf = [], []
    for uid in utts:
        eos = eos_of.get(uid)
        if not eos:
            continue
        if uid in rev0:
            lat0.append(rev0[uid] - eos)
        if uid in final:
            latf.append(final[uid] - eos)
    # live utterances on the speaker's WAV; each truth utterance is covered by every live
    # utterance of its speaker that overlaps it (a turn may cover several truths)
    covering: dict[int, list[tuple[int, str]]] = defaultdict(list)
    hyp_text: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for uid, u in utts.items():
        speaker = log["speaker_of"].get(u["speaker_id"], "?")
        offset = log["offsets"].get(speaker, 0)
        start, end = u["start_ms"] - offset, u["end_ms"] - offset
        hyp_text[speaker].append((start, u["text"]))
        for t in dialogue.truths:
            overlap = min(end, t.end_ms) - max(start, t.start_ms)
            if t.speaker == speaker and overlap > 0:
                covering[t.index].append((overlap, uid))
    errors = ref_words = 0
    for s in "AB":
        ref = " ".join(t.text for t in dialogue.truths if t.speaker == s)
        hyp = " ".join(text for _, text in sorted(hyp_text[s]))
        e, n = word_errors(ref, hyp)
        errors, ref_words = errors + e, ref_words + n
    lost = agree = gold_hits = scored = 0
    segments, lost_texts = [], []
    for t in dialogue.truths:
        cands = covering.get(t.index, [])
        segments.append(len(cands))
        labelled = [(o, uid) for o, uid in cands if uid in label]
        if not labelled:
            lost += 1
            lost_texts.append(t.text)
            continue
        live = label[max(labelled)[1]]
        scored += 1
        agree += live == dialogue.offline.get(t.index)
        gold_hits += live == t.gold
    return {"lat0": lat0, "latf": latf, "wer_errors": errors, "wer_words": ref_words,
            "segments": segments, "lost": lost, "truths": len(dialogue.truths), "agree": agree,
            "gold_hits": gold_hits, "scored": scored, "lost_texts": lost_texts,
            "offline_gold_hits": sum(dialogue.offline.get(t.index) == t.gold for t in dialogue.truths)}


def _pcts(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {f"p{q}": round(float(np.percentile(values, q)), 1) for q in (50, 95, 99)}


def _cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _metric(url: str, name: str) -> float:
    async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics") as r:
        text = await r.text()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def summarize_profile(collapsed: Path, top: int = 15) -> dict[str, Any]:
    """Share of samples in the hottest frames (self and inclusive; idle waits included)."""
    leaf: dict[str, int] = defaultdict(int)
    inclusive: dict[str, int] = defaultdict(int)
    total = 0
    for line in collapsed.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack_text.split(";")
        total += count
        leaf[frames[-1]] += count
        for frame in set(frames[1:]):
            inclusive[frame] += count

    def share(d: dict[str, int]) -> list[list[object]]:
        return [[k, round(v / total, 3)] for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    return {"samples": total, "self": share(leaf), "inclusive": share(inclusive)}


def start_profile(pid: int | None, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """``py-spy record`` of the streamer (threads, idle excluded, native frames off)."""
    spy = Path(sys.executable).with_name("py-spy")
    if pid is None or not spy.exists():
        return None
    return subprocess.Popen([str(spy), "record", "--pid", str(pid), "--duration", str(int(seconds)),
                             "--rate", "50", "--format", "raw", "--threads", "--nonblocking",
                             "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def run_level(stack: EmbeddedStack, dialogues: list[Dialogue], n: int,
                    profile_to: Path | None = None) -> dict[str, Any]:
    url = stack.url.rstrip("/")
    pid = stack.streamer.pid
    longest_call_s = max(d.truths[-1].end_ms for d in dialogues) / 1000
    spy = start_profile(pid, longest_call_s + n * STAGGER_S, profile_to) if profile_to else None
    cpu0, t0 = _cpu_s(pid), time.monotonic()
    degraded0 = await _metric(url, "streamer_asr_degraded_segments_total")
    names = ("streamer_utterance_latency_seconds_sum", "streamer_utterance_latency_seconds_count",
             "streamer_asr_real_time_factor_sum", "streamer_asr_real_time_factor_count",
             'streamer_utterances_total{outcome="no_speech"}')
    before = [await _metric(url, m) for m in names]
    longest_s = max(len(d.truths) for d in dialogues) * 6 + 30
    picked = [dialogues[i % len(dialogues)] for i in range(n)]
    async def staggered(i: int, d: Dialogue) -> dict[str, Any]:
        await asyncio.sleep(i * STAGGER_S)  # calls arrive one after another, as admission sees them
        return await run_call(url, d, i, longest_s)

    logs = await asyncio.gather(*(staggered(i, d) for i, d in enumerate(picked)))
    wall_s = time.monotonic() - t0
    cpu = (_cpu_s(pid) - cpu0) / wall_s
    degraded = await _metric(url, "streamer_asr_degraded_segments_total") - degraded0
    d = [await _metric(url, m) - b for m, b in zip(names, before, strict=True)]
    scores = [score_call(d, log) for d, log in zip(picked, logs, strict=True) if log["refused"] is None]
    profile = None
    if spy is not None:
        await asyncio.to_thread(spy.wait, 60)
        if profile_to is not None and await asyncio.to_thread(profile_to.exists):
            profile = summarize_profile(profile_to)  # noqa: ASYNC240 -- after the calls, timing is over
    lat0 = [x for s in scores for x in s["lat0"]]
    latf = [x for s in scores for x in s["latf"]]
    segs = [x for s in scores for x in s["segments"]]
    words_n = sum(s["wer_words"] for s in scores)
    scored = sum(s["scored"] for s in scores)
    return {
        "calls": n, "calls_refused": sum(log["refused"] is not None for log in logs),
        "refusals": [log["refused"] for log in logs if log["refused"]][:2],
        "client_exit_codes": sorted(c for log in logs for c in log["exit_codes"]),
        "client_errors": [e for log in logs for e in log.get("client_errors", [])][:2],
        "truth_utterances": sum(s["truths"] for s in scores),
        "live_utterances": len(lat0),
        "rev0_latency_ms": _pcts(lat0), "final_latency_ms": _pcts(latf),
        "wer": round(sum(s["wer_errors"] for s in scores) / words_n, 4) if words_n else None,
        "segments_per_truth": round(statistics.mean(segs), 3) if segs else None,
        "lost": sum(s["lost"] for s in scores),
        "agreement_with_offline": round(sum(s["agree"] for s in scores) / scored, 4) if scored else None,
        "live_accuracy_vs_gold": round(sum(s["gold_hits"] for s in scores) / scored, 4) if scored else None,
        "offline_accuracy_vs_gold": round(sum(s["offline_gold_hits"] for s in scores)
                                          / max(sum(s["truths"] for s in scores), 1), 4),
        "lost_texts": [t for s in scores for t in s["lost_texts"]][:6],
        "no_speech_discards": d[4],
        "streamer_share_ms_mean": round(d[0] / d[1] * 1000, 1) if d[1] else None,
        "asr_rtf_mean": round(d[2] / d[3], 3) if d[3] else None,
        "degraded_segments": degraded, "streamer_cpu_cores": round(cpu, 3), "wall_s": round(wall_s, 1),
        **({"profile": profile} if profile else {}),
    }


# -- report ----------------------------------------------------------------------------------

def write_report(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# End-to-end latency ({report['when']})", "", f"`{report['command']}`", "",
             report["what"], "",
             "| policy | calls | refused | rev-0 p50/p95/p99 ms | final p50/p95 ms | WER | seg/utt | lost "
             "| agree offline | streamer CPU | streamer share ms | exit codes | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        l0, lf = r["rev0_latency_ms"] or {}, r["final_latency_ms"] or {}
        codes = ",".join(str(c) for c in sorted(set(r["client_exit_codes"]))) or "-"
        lines.append(
            f"| {r['policy']} | {r['calls']} | {r['calls_refused']} | "
            f"{l0.get('p50', '-')}/{l0.get('p95', '-')}/{l0.get('p99', '-')} | "
            f"{lf.get('p50', '-')}/{lf.get('p95', '-')} | {r['wer']} | "
            f"{r['segments_per_truth']} | {r['lost']}/{r['truth_utterances']} | "
            f"{r['agreement_with_offline']} | "
            f"{r['streamer_cpu_cores']} | {r.get('streamer_share_ms_mean')} | {codes} | "
            f"{r.get('load_average')} |")
    (out.with_suffix(".md")).write_text("\n".join(lines) + "\n")


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for policy in report["policies"]:
        rows = [r for r in report["results"] if r["policy"] == policy and r["rev0_latency_ms"]]
        if not rows:
            continue
        n = [r["calls"] for r in rows]
        line, = ax.plot(n, [r["rev0_latency_ms"]["p50"] for r in rows], marker="o", label=f"{policy} p50")
        ax.plot(n, [r["rev0_latency_ms"]["p95"] for r in rows], marker="^", linestyle="--",
                color=line.get_color(), label=f"{policy} p95")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent two-party calls")
    ax.set_ylabel("revision-0 latency, end of speech -> subscriber (ms)")
    ax.axhline(500, color="grey", linewidth=0.6)
    ax.axhline(1500, color="grey", linewidth=0.6)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"End-to-end Emotion latency, {os.cpu_count()} CPU cores (tiny.en)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8, 12])
    parser.add_argument("--policies", nargs="+", default=["baseline", "segment"], choices=sorted(POLICIES))
    parser.add_argument("--dialogues", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "e2e.json")
    parser.add_argument("--profile-level", type=int, help="py-spy the streamer during this level "
                                                          "(each policy; needs py-spy, dev extra)")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild the .md and .png from an existing --out JSON (no run)")
    args = parser.parse_args()
    if args.report_only:
        report = json.loads(args.out.read_text())
        write_report(report, args.out)
        plot(report, args.out.with_suffix(".png"))
        return

    work = Path(tempfile.mkdtemp(prefix="e2e-"))
    dialogues = meld_dialogues(args.dialogues)
    for d in dialogues:
        synthesize(d, work, args.seed)
    offline_labels(dialogues)
    report: dict[str, Any] = {
        "what": "N concurrent two-party calls (MELD dev dialogues, espeak-ng, real-time streamer.join "
                "clients), one SSE subscriber per call; latency = arrival at the subscriber - "
                "end_of_speech_at; everything (stack, clients) on this machine",
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "command": "python benchmarks/e2e.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_at_start": os.getloadavg()[0]},
        "dialogues": [{"dialogue_id": d.dialogue_id, "utterances": len(d.truths),
                       "speech_s": round(sum(t.end_ms - t.start_ms for t in d.truths) / 1000, 1),
                       "call_s": round(d.truths[-1].end_ms / 1000 + TAIL_S, 1)} for d in dialogues],
        "policies": {p: POLICIES[p] for p in args.policies}, "results": [],
    }
    stacks: dict[str, EmbeddedStack] = {}
    try:
        for policy in args.policies:
            saved = dict(os.environ)
            os.environ.update(POLICIES[policy])
            try:
                stack = EmbeddedStack(StackSettings(
                    port=free_port(), broker_port=free_port(), redis_port=free_port(),
                    worker_metrics_port=free_port(), data_dir=work / f"stack-{policy}"))
                stack.start()
            finally:
                os.environ.clear()
                os.environ.update(saved)
            stacks[policy] = stack
        for n in args.levels:
            for policy in args.policies:
                spied = work / f"profile-{policy}-{n}.txt" if n == args.profile_level else None
                result = {"policy": policy, **asyncio.run(run_level(stacks[policy], dialogues, n, spied)),
                          "load_average": round(os.getloadavg()[0], 2)}
                print(json.dumps(result), flush=True)
                report["results"].append(result)
                write_report(report, args.out)
                time.sleep(3)  # let the stack settle (idle calls end, backlog drains)
    finally:
        for stack in stacks.values():
            stack.stop()
    write_report(report, args.out)
    plot(report, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
