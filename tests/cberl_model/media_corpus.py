"""A tiny MELD-layout corpus with real media, made by the tests (espeak-ng + ffmpeg).

Faces: the Grace Hopper photograph shipped in matplotlib's sample data (a real face that
MediaPipe and the Haar cascade both detect); "no face" clips show a flat grey frame.
Broken media: one clip holds random bytes, one is missing.
"""

from __future__ import annotations

import csv
import subprocess
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np

FACE_JPG = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


@dataclass(frozen=True)
class Line:
    """One utterance of the corpus: what is said, its label and what its clip shows."""

    text: str
    emotion: str
    clip: str = "face"  # face | grey | corrupt | missing


TRAIN = [
    [Line("I am so happy to see you!", "joy"), Line("Stop shouting at me right now.", "anger"),
     Line("The meeting is at noon.", "neutral", "grey")],
    [Line("This is wonderful news, thank you!", "joy"), Line("I hate it when you do that.", "anger"),
     Line("Okay, see you tomorrow.", "neutral")],
    [Line("What a lovely day.", "joy", "grey"), Line("Get out of my room!", "anger", "corrupt"),
     Line("Fine, whatever you say.", "neutral", "missing")],
]
DEV = [
    [Line("Great, I love it!", "joy"), Line("You ruined everything!", "anger", "grey")],
    [Line("It is on the table.", "neutral"), Line("Yes, wonderful!", "joy")],
]


def _run(*cmd: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{cmd[0]} failed: {done.stderr[-2000:]}"


def make_clip(path: Path, text: str, clip: str, work: Path) -> None:
    """An mp4 with espeak-ng speech and a face (or grey) picture; or a broken file."""
    if clip == "missing":
        return
    if clip == "corrupt":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
        return
    wav = work / f"{path.stem}.wav"
    _run("espeak-ng", "-s", "170", "-w", str(wav), text)
    picture = ["-loop", "1", "-framerate", "10", "-i", str(FACE_JPG)] if clip == "face" else \
        ["-f", "lavfi", "-i", "color=c=gray:s=256x300:r=10"]
    _run("ffmpeg", "-v", "error", "-y", *picture, "-i", str(wav), "-vf", "scale=256:300",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
         "-shortest", str(path))


def make_meld_layout(root: Path) -> tuple[Path, Path]:
    """``train_sent_emo.csv`` + ``train_splits/`` and ``dev_sent_emo.csv`` +
    ``dev_splits_complete/``, as in MELD's raw release; returns the two CSV paths."""
    work = root / "_wav"
    work.mkdir(parents=True)
    paths = []
    for split, folder, dialogues in (("train", "train_splits", TRAIN),
                                     ("dev", "dev_splits_complete", DEV)):
        clips = root / folder
        clips.mkdir()
        csv_path = root / f"{split}_sent_emo.csv"
        with csv_path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment",
                             "Dialogue_ID", "Utterance_ID", "Season", "Episode", "StartTime",
                             "EndTime"])
            for d, lines in enumerate(dialogues):
                for u, line in enumerate(lines):
                    writer.writerow([0, line.text, ("Ross", "Rachel")[u % 2], line.emotion,
                                     "neutral", d, u, 1, 1, "00:00:01,000", "00:00:03,000"])
                    make_clip(clips / f"dia{d}_utt{u}.mp4", line.text, line.clip, work)
        paths.append(csv_path)
    return paths[0], paths[1]


def clip_kind(utterance_id: str, dialogues: list[list[Line]]) -> str:
    """What the clip of ``dia{D}_utt{U}`` shows (``face``, ``grey``, ``corrupt``, ``missing``)."""
    d, u = (int(x) for x in utterance_id.removeprefix("dia").split("_utt"))
    return dialogues[d][u].clip
