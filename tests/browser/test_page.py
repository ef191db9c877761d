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

from deploy.speech import timeline_wav
from tests.fixtures_services import ROOT, SINGLE_THREAD_ENV

SENTENCES = ("I am so happy to see you again today.", "Why did you break my favourite cup?")


def _speech(path: Path) -> None:
    """16-bit PCM speech: 1.5 s of leading silence, pauses between the sentences, 3 s after."""
    timeline_wav(path, [(1.5, SENTENCES[0]), (6.0, SENTENCES[1])], 12.0, path.parent)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def test_page_shows_transcript_and_final_emotion_chips(tmp_path: Path) -> None:
    wav = tmp_path / "speech.wav"
    _speech(wav)
    out = ROOT / "test-artifacts" / "browser"
    script = (f"ip link set lo up && exec {sys.executable} -m tests.browser.page_session "
              f"--wav {wav} --out {out} --expected-utterances {len(SENTENCES)}")
    # the stack's services run in their data directories: this checkout goes on their sys.path
    env = {**os.environ, **SINGLE_THREAD_ENV, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(["unshare", "-n", "sh", "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    shown = result["shown"]
    assert (out / "page.png").stat().st_size > 10_000
    assert len(shown) == len(SENTENCES), shown
    assert {row["speaker"] for row in shown} == {"Ada"}
    assert result["invite_role"] == "invite"  # the invite link mints participants, reads nothing
    # Before the call ended, the last utterance lacked future context: provisional.
    assert result["before_end"][-1]["label"] and not result["before_end"][-1]["final"]
    for row, sentence in zip(shown, SENTENCES, strict=True):
        expected = _words(sentence)
        overlap = len(set(_words(row["text"])) & set(expected)) / len(set(expected))
        assert overlap >= 0.7, (row["text"], sentence)
        assert row["label"] in result["labels"] and row["final"], row
