"""The web page in headless Chromium against the embedded stack, over loopback only.

The browser's fake microphone plays espeak-ng speech; the page must show the speaker's
transcript with emotion chips from the model's label set that end final once the call ends.
The screenshot is kept in ``test-artifacts/page.png``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SENTENCES = ("I am so happy to see you again today.", "Why did you break my favourite cup?")


def _speech(path: Path) -> None:
    """16-bit PCM speech with 1 s of leading silence and pauses between the sentences."""
    parts = []
    for i, sentence in enumerate(SENTENCES):
        raw = path.with_name(f"s{i}.wav")
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(raw), sentence], check=True)
        parts.append(str(raw))
    subprocess.run(["sox", "-n", "-r", "22050", "-c", "1", "-b", "16", str(path.with_name("gap.wav")),
                    "trim", "0", "1.5"], check=True)
    gap = str(path.with_name("gap.wav"))
    subprocess.run(["sox", gap, parts[0], gap, parts[1], gap, gap, "-b", "16", str(path)], check=True)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def test_page_shows_transcript_and_final_emotion_chips(tmp_path: Path) -> None:
    wav = tmp_path / "speech.wav"
    _speech(wav)
    out = ROOT / "test-artifacts" / "browser"
    script = (f"ip link set lo up && exec {sys.executable} -m tests.browser.page_session "
              f"--wav {wav} --out {out} --expected-utterances {len(SENTENCES)}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["unshare", "-n", "sh", "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    shown = result["shown"]
    assert (out / "page.png").stat().st_size > 10_000
    assert len(shown) == len(SENTENCES), shown
    assert {row["speaker"] for row in shown} == {"Ada"}
    # Before the call ended, the last utterance lacked future context: provisional.
    assert result["before_end"][-1]["label"] and not result["before_end"][-1]["final"]
    for row, sentence in zip(shown, SENTENCES, strict=True):
        expected = _words(sentence)
        overlap = len(set(_words(row["text"])) & set(expected)) / len(set(expected))
        assert overlap >= 0.7, (row["text"], sentence)
        assert row["label"] in result["labels"] and row["final"], row
