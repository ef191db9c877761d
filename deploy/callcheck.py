"""What a subscriber of a call sees, and what of a spoken script it lost (fault tests, soak).

- :func:`snapshot`: the call stream so far, through the gateway's SSE endpoint
  (``follow=false``): the transcripts and the emotion events, as a subscriber gets them.
- :func:`score`: for a script of ``(speaker name, sentence)`` truths, how many have no
  final label (lost), how many utterances got more than one final label (duplicated),
  and utterances with no final label.
- :func:`stack_children`: the processes of a running ``deploy.embedded``, by service.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import psutil

from deploy.speech import words


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


def score(snap: Snapshot, script: list[tuple[str, str]], min_overlap: float = 0.5) -> Score:
    """Match each ``(speaker_name, sentence)`` to a final-labelled utterance by words."""
    finals = snap.finals()
    labelled = [t for uid, t in snap.transcripts.items() if uid in finals]
    used: set[str] = set()
    lost = 0
    for speaker, sentence in script:
        best = max((t for t in labelled if t["speaker_name"] == speaker and t["utterance_id"] not in used),
                   key=lambda t: _overlap(sentence, t["text"]), default=None)
        if best is None or _overlap(sentence, best["text"]) < min_overlap:
            lost += 1
        else:
            used.add(best["utterance_id"])
    return Score(truths=len(script), lost=lost, duplicated=sum(1 for n in finals.values() if n > 1),
                 unlabelled=sum(1 for uid in snap.transcripts if uid not in finals),
                 utterances=len(snap.transcripts))


def stack_children(stack_pid: int) -> dict[str, psutil.Process]:
    """``{"tansu", "redis", "worker", "streamer"}`` -> process, of a ``deploy.embedded``."""
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
        elif "-m" in cmd and cmd[cmd.index("-m") + 1:cmd.index("-m") + 2] == ["workers"]:
            found["worker"] = child
        elif "-m" in cmd and cmd[cmd.index("-m") + 1:cmd.index("-m") + 2] == ["streamer"]:
            found["streamer"] = child
    return found
