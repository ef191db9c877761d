"""espeak-ng speech for synthetic calls and for the training texts ASR hears (deploy/speech.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deploy.speech import RATE, say, speak


def _loud(audio: np.ndarray) -> np.ndarray:
    return np.nonzero(np.abs(audio) > 0.01)[0]


def test_say_trims_to_the_sound_and_speak_keeps_the_padding_asked_for(tmp_path: Path) -> None:
    tight = say("Hello there, how are you?", tmp_path)
    assert tight.dtype == np.float32 and tight.size > RATE // 2  # half a second of real speech
    assert _loud(tight)[0] == 0 and _loud(tight)[-1] == tight.size - 1
    padded = speak("Hello there, how are you?", "en-us", 150, tmp_path, pad_s=0.1)
    loud = _loud(padded)
    lead, tail = loud[0], padded.size - 1 - loud[-1]
    assert 0 < max(lead, tail) and lead <= RATE // 10 and tail <= RATE // 10  # what espeak left
    np.testing.assert_allclose(padded[loud[0]:loud[-1] + 1], tight, atol=1e-3)  # sox dithers
    other = speak("Hello there, how are you?", "en-gb-scotland", 155, tmp_path, pad_s=0.0)
    assert other.size != tight.size  # the voice and rate reach espeak-ng
