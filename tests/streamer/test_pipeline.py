"""The participant pipeline on 60 s of silence and noise (no utterances), on speech (one),
and the endpointer's split and flush rules."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from contracts.events import UtteranceEvent
from deploy.speech import RATE, say, word_error_rate
from streamer.analyzer import SegmentAnalyzer
from streamer.vad import Endpointer, VadParams
from tests.factories import call_ended
from tests.streamer.harness import run_pipeline


def _sox_noise(path: Path, kind: str, seconds: int, volume: float) -> np.ndarray:
    subprocess.run(["sox", "-R", "-n", "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed", "-t", "raw",
                    str(path), "synth", str(seconds), kind, "vol", str(volume)], check=True)
    return np.fromfile(path, np.int16).astype(np.float32) / 32768


@pytest.mark.asyncio
@pytest.mark.parametrize(("kind", "volume"), [("silence", 0.0), ("whitenoise", 0.05),
                                              ("pinknoise", 0.3), ("brownnoise", 0.5)])
async def test_sixty_seconds_without_speech_give_no_utterance(
        kind: str, volume: float, analyzer: SegmentAnalyzer, tmp_path: Path) -> None:
    audio = np.zeros(60 * RATE, np.float32) if kind == "silence" else \
        _sox_noise(tmp_path / "noise.raw", kind, 60, volume)
    assert audio.size == 60 * RATE
    events = await run_pipeline(audio, analyzer)
    assert events == [call_ended("c-test", -1, produced_at=events[-1].produced_at)]


@pytest.mark.asyncio
async def test_speech_in_noise_gives_one_utterance(analyzer: SegmentAnalyzer, tmp_path: Path) -> None:
    sentence = "Where did you put the keys to the car?"
    speech = say(sentence, tmp_path)
    audio = _sox_noise(tmp_path / "noise.raw", "pinknoise", 6, 0.05)
    audio[RATE:RATE + speech.size] += speech
    events = await run_pipeline(audio, analyzer)
    assert len(events) == 2 and isinstance(events[0], UtteranceEvent)
    assert word_error_rate(sentence, events[0].text) <= 0.1, events[0].text
    assert abs(events[0].end_ms - (RATE + speech.size) * 1000 // RATE) <= 300


def _feed(endpointer: Endpointer, audio: np.ndarray) -> list:
    segments = []
    for i in range(0, audio.size, 320):
        segments += endpointer.feed(audio[i:i + 320], arrival_ms=i // 16)
    return segments


def test_long_speech_is_split_at_max_length_without_losing_audio(tmp_path: Path) -> None:
    words = " ".join(["one two three four five six seven eight nine ten"] * 3)
    speech = say(words, tmp_path)
    audio = np.concatenate([np.zeros(RATE // 2, np.float32), speech, np.zeros(RATE, np.float32)])
    segments = _feed(Endpointer(VadParams(max_utterance_s=3.0)), audio)
    assert len(segments) >= 3
    assert [s.reason for s in segments[:-1]] == ["max_length"] * (len(segments) - 1)
    assert all(s.end_sample - s.start_sample <= 3 * RATE for s in segments)
    for before, after in zip(segments, segments[1:], strict=False):
        assert after.start_sample == before.end_sample, "a split must not drop or repeat audio"


def test_hangup_flushes_the_open_segment(tmp_path: Path) -> None:
    speech = say("Thank you for helping me with my homework.", tmp_path)
    cut = RATE // 2 + speech.size // 2
    audio = np.concatenate([np.zeros(RATE // 2, np.float32), speech])[:cut]
    endpointer = Endpointer(VadParams())
    assert _feed(endpointer, audio) == [] and endpointer.in_speech
    flushed = endpointer.finish(arrival_ms=cut // 16)
    assert flushed is not None and flushed.reason == "hangup"
    assert abs(flushed.end_sample - cut) <= 512 and abs(flushed.start_sample - RATE // 2) <= 1600


def test_clicks_shorter_than_min_speech_are_dropped() -> None:
    audio = np.zeros(3 * RATE, np.float32)
    rng = np.random.default_rng(0)
    audio[RATE:RATE + 800] = rng.normal(0, 0.5, 800)  # a 50 ms burst
    endpointer = Endpointer(VadParams(min_speech_ms=150))
    assert _feed(endpointer, audio) == [] and endpointer.finish(0) is None


def _feed_tentative(endpointer: Endpointer, audio: np.ndarray) -> tuple[list, list]:
    segments, tentative = [], []
    for i in range(0, audio.size, 320):
        segments += endpointer.feed(audio[i:i + 320], arrival_ms=i // 16)
        t = endpointer.take_tentative()
        if t is not None:
            tentative.append(t)
    return segments, tentative


def test_a_tentative_segment_is_the_segment_that_closes(tmp_path: Path) -> None:
    speech = say("Where did you put the keys to the car?", tmp_path)
    audio = np.concatenate([np.zeros(RATE // 2, np.float32), speech, np.zeros(RATE, np.float32)])
    segments, tentative = _feed_tentative(Endpointer(VadParams(speculate_ms=100)), audio)
    assert len(segments) == 1
    last = tentative[-1]
    assert (last.start_sample, last.end_sample) == (segments[0].start_sample, segments[0].end_sample)
    assert np.array_equal(last.audio, segments[0].audio)
    assert abs(last.end_of_speech_at_ms - segments[0].end_of_speech_at_ms) <= 40
    assert _feed_tentative(Endpointer(VadParams()), audio)[1] == []  # off by default


def test_turn_mode_keeps_a_speakers_pause_inside_the_turn_until_another_speaks(tmp_path: Path) -> None:
    first, second = say("I am really happy.", tmp_path), say("You called me this morning.", tmp_path)
    pause = np.zeros(int(0.45 * RATE), np.float32)
    audio = np.concatenate([np.zeros(RATE // 2, np.float32), first, pause, second,
                            np.zeros(RATE, np.float32)])
    assert len(_feed(Endpointer(VadParams()), audio)) == 2                  # segments: split at the pause
    assert len(_feed(Endpointer(VadParams(turn_silence_ms=700)), audio)) == 1  # a turn: one
    # another participant starts talking during the pause: the turn ends there
    turn = Endpointer(VadParams(turn_silence_ms=700))
    in_pause = RATE // 2 + first.size + int(0.35 * RATE)
    assert _feed(turn, audio[:in_pause]) == []
    cut = turn.yield_floor(arrival_ms=in_pause // 16)
    assert cut is not None and cut.reason == "turn"
    assert abs(cut.end_sample - (RATE // 2 + first.size)) <= 1600
