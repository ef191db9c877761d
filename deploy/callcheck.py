"""What a subscriber of a call sees, and what of a spoken script it lost (fault tests, soak).

- :func:`snapshot`: the call stream so far, through the gateway's SSE endpoint
  (``follow=false``): the transcripts and the emotion events, as a subscriber gets them.
- :func:`score`: for a script of ``(speaker name, sentence)`` truths, how many have no
  final label (lost), how many utterances got more than one final label (duplicated),
  and utterances with no final label.
- :func:`stack_children`: the processes of a running ``deploy.embedded``, by service.
"""

from __future__ import annotations

import csv
import json
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from deploy.speech import RATE, say, words, write_wav


@dataclass
class Snapshot:
    transcripts: dict[str, dict[str, Any]] = field(default_factory=dict)  # utterance_id -> entry
    emotions: list[dict[str, Any]] = field(default_factory=list)

    def finals(self) -> dict[str, int]:
        """utterance_id -> how many final emotion events it got."""
        counts: dict[str, int] = {}
        for e in self.emotions:
            if e.get("final"):
                counts[e["utterance_id"]] = counts.get(e["utterance_id"], 0) + 1
        return counts


def snapshot(server: str, call_id: str, token: str, timeout_s: float = 30.0) -> Snapshot:
    """The call's stream from its start, as one SSE subscriber receives it."""
    url = f"{server}/v1/calls/{call_id}/emotions?token={token}&follow=false"
    snap = Snapshot()
    kind = ""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        for raw in response.read().decode().splitlines():
            if raw.startswith("event: "):
                kind = raw[7:].strip()
            elif raw.startswith("data: "):
                data = json.loads(raw[6:])
                if kind == "utterance":
                    snap.transcripts[data["utterance_id"]] = data
                elif kind == "emotion":
                    snap.emotions.append(data)
    return snap


def _overlap(truth: str, text: str) -> float:
    want = set(words(truth))
    return len(want & set(words(text))) / max(len(want), 1)


@dataclass
class Score:
    truths: int
    lost: int  # truth sentences with no final-labelled utterance of their speaker
    duplicated: int  # utterances with more than one final label
    unlabelled: int  # utterances transcribed but with no final label
    utterances: int
    lost_index: list[int] = field(default_factory=list)  # which truths were lost


def score(snap: Snapshot, script: list[tuple[str, str]], min_overlap: float = 0.5) -> Score:
    """Match each ``(speaker_name, sentence)`` to a final-labelled utterance by words."""
    finals = snap.finals()
    labelled = [t for uid, t in snap.transcripts.items() if uid in finals]
    used: set[str] = set()
    lost = 0
    lost_index: list[int] = []
    for speaker, sentence in script:
        best = max((t for t in labelled if t["speaker_name"] == speaker and t["utterance_id"] not in used),
                   key=lambda t: _overlap(sentence, t["text"]), default=None)
        if best is None or _overlap(sentence, best["text"]) < min_overlap:
            lost += 1
            lost_index.append(len(lost_index) + len(used))
        else:
            used.add(best["utterance_id"])
    return Score(truths=len(script), lost=lost, duplicated=sum(1 for n in finals.values() if n > 1),
                 unlabelled=sum(1 for uid in snap.transcripts if uid not in finals),
                 utterances=len(snap.transcripts), lost_index=lost_index)


def _listening(process: psutil.Process) -> bool:
    try:
        return any(c.status == psutil.CONN_LISTEN for c in process.net_connections("tcp"))
    except psutil.Error:
        return False


def stack_children(stack_pid: int) -> dict[str, psutil.Process]:
    """``{"tansu", "redis", "worker", "worker_standby", "streamer", "streamer_standby"}`` ->
    process, of a ``deploy.embedded``. Of its two worker (streamer) processes, the one with
    a listening socket is the live one; the other is the warm standby (a promoted standby
    keeps its command line)."""
    found: dict[str, psutil.Process] = {}
    for child in psutil.Process(stack_pid).children(recursive=False):
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        name = child.name()
        if name == "tansu" or any(c.endswith("/tansu") for c in cmd[:1]):
            found["tansu"] = child
        elif name == "redis-server":
            found["redis"] = child
        elif "-m" in cmd and (module := cmd[cmd.index("-m") + 1:cmd.index("-m") + 2]) in (
                ["workers"], ["streamer"]):
            role = {"workers": "worker", "streamer": "streamer"}[module[0]]
            found[role if _listening(child) else f"{role}_standby"] = child
    return found


@dataclass(frozen=True)
class Line:
    speaker: str
    text: str
    start_s: float
    end_s: float


def meld_dialogues(csv_path: Path, count: int, min_words: int = 3, max_lines: int = 8,
                   skip: int = 0) -> list[list[tuple[str, str]]]:
    """``count`` MELD dialogues as ``(speaker, sentence)`` turns of their first two speakers
    (sentences of at least ``min_words`` words; at most ``max_lines`` per dialogue)."""
    by_dialogue: dict[str, list[tuple[str, str]]] = {}
    with open(csv_path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            text = row["Utterance"].replace("\u2019", "'").replace("\u2014", " ").strip()
            by_dialogue.setdefault(row["Dialogue_ID"], []).append((row["Speaker"].strip(), text))
    out = []
    for turns in list(by_dialogue.values())[skip:]:
        speakers = list(dict.fromkeys(s for s, _ in turns))[:2]
        kept = [(s, t) for s, t in turns if s in speakers and len(words(t)) >= min_words][:max_lines]
        if len({s for s, _ in kept}) == 2 and len(kept) >= 4:
            out.append(kept)
        if len(out) == count:
            break
    return out


def dialogue_wavs(turns: list[tuple[str, str]], workdir: Path, gap_s: float = 1.5,
                  lead_s: float = 1.0, tail_s: float = 2.0, min_total_s: float = 0.0,
                  ) -> tuple[dict[str, Path], list[Line]]:
    """One WAV per speaker (same length): each speaks their turns in order, silent during
    the other's; returns the WAVs and where every line is on the shared timeline."""
    workdir.mkdir(parents=True, exist_ok=True)
    audio = [(speaker, text, say(text, workdir)) for speaker, text in turns]
    lines, t = [], lead_s
    for speaker, text, a in audio:
        lines.append(Line(speaker, text, t, t + a.size / RATE))
        t += a.size / RATE + gap_s
    total = max(t + tail_s, min_total_s)
    wavs = {}
    for speaker in dict.fromkeys(s for s, _ in turns):
        track = np.zeros(int(total * RATE), np.float32)
        for line, (_, _, a) in zip(lines, audio, strict=True):
            if line.speaker == speaker:
                start = int(line.start_s * RATE)
                track[start:start + a.size] = a
        safe = "".join(c if c.isalnum() else "_" for c in speaker)
        wavs[speaker] = write_wav(workdir / f"{safe}.wav", track)
    return wavs, lines
