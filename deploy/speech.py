"""Synthetic spoken calls with espeak-ng, for tests, benchmarks and smoke-testing a deployment.

:func:`timeline_wav` lays sentences spoken by espeak-ng (:func:`say`) out on a call's
timeline and writes the WAV a participant streams (``streamer.join --wav``), returning
where each sentence's sound really starts and stops (:class:`Spoken`);
:func:`word_error_rate` / :func:`word_errors` compare what was said with what the streamer
transcribed. The streamer tests and the end-to-end, ASR-window, fault and soak benchmarks
use it.

Needs the ``espeak-ng`` and ``sox`` programs (``deploy/system-packages.sh``).
"""

from __future__ import annotations

import re
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 16_000


@dataclass(frozen=True)
class Spoken:
    """One sentence placed on a WAV's timeline; ``end_ms`` is where its sound really stops."""

    text: str
    start_ms: int
    end_ms: int


def speak(text: str, voice: str, rate_wpm: int, workdir: Path, pad_s: float) -> np.ndarray:
    """``text`` spoken by espeak-ng in ``voice``, 16 kHz mono float32, silence trimmed to
    ``pad_s`` either side (the one place the project drives espeak-ng: synthetic calls here,
    and the training texts ASR hears, :mod:`cberl_model.augment.asr_text`)."""
    raw, out = workdir / "espeak.wav", workdir / "espeak16.raw"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate_wpm), "-w", str(raw), text],
                   check=True, capture_output=True)
    subprocess.run(["sox", "-R", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed",
                    "-t", "raw", str(out)], check=True, capture_output=True)
    audio = np.fromfile(out, np.int16).astype(np.float32) / 32768
    loud = np.nonzero(np.abs(audio) > 0.01)[0]
    if not loud.size:
        return audio
    pad = int(pad_s * RATE)
    return audio[max(0, loud[0] - pad):loud[-1] + 1 + pad]


def say(text: str, workdir: Path) -> np.ndarray:
    """``text`` spoken by espeak-ng (en-us, 150 wpm), trimmed to the sound itself, so a
    :class:`Spoken`'s bounds are where the sound is."""
    return speak(text, "en-us", 150, workdir, pad_s=0.0)


def write_wav(path: Path, audio: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


def timeline_wav(path: Path, script: list[tuple[float, str]], total_s: float,
                 workdir: Path) -> list[Spoken]:
    """Write ``path``: silence of ``total_s`` with each ``(start_s, sentence)`` spoken in it."""
    audio = np.zeros(int(total_s * RATE), np.float32)
    spoken = []
    for start_s, text in script:
        speech = say(text, workdir)
        start = int(start_s * RATE)
        assert start + speech.size <= audio.size, f"{text!r} does not fit before {total_s} s"
        audio[start:start + speech.size] = speech
        spoken.append(Spoken(text, start * 1000 // RATE, (start + speech.size) * 1000 // RATE))
    write_wav(path, audio)
    return spoken


_CONTRACTIONS = {"i'm": "i am", "it's": "it is", "that's": "that is", "don't": "do not",
                 "we're": "we are", "you're": "you are", "can't": "cannot", "won't": "will not"}


def words(text: str) -> list[str]:
    """Lower-case words without punctuation, common contractions expanded (WER normalisation)."""
    text = text.lower().replace("\u2019", "'")
    for short, long in _CONTRACTIONS.items():
        text = re.sub(rf"\b{re.escape(short)}\b", long, text)
    return re.findall(r"[a-z0-9']+", text)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """``(word-level Levenshtein distance, reference length)``: summed over many
    utterances, their ratio is the corpus WER."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)], len(ref)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance / reference length."""
    errors, length = word_errors(reference, hypothesis)
    return errors / max(length, 1)
