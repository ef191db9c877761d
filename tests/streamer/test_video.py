"""Video frames are sampled at the configured rate, and only while the participant speaks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from aiortc.mediastreams import VideoStreamTrack

from deploy.speech import RATE, say
from streamer.analyzer import AnalyzedSegment, SegmentAnalyzer
from streamer.frames import SpeechSegment
from tests.streamer.harness import run_pipeline


@pytest.mark.asyncio
async def test_frames_sampled_while_speaking(analyzer: SegmentAnalyzer, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    speech = say("Do you want to have dinner with us tonight?", tmp_path)
    audio = np.zeros(int(1.5 * RATE) + speech.size + RATE, np.float32)
    audio[int(1.5 * RATE):int(1.5 * RATE) + speech.size] = speech
    seen: list[SpeechSegment] = []
    process = analyzer.process

    async def recording(segment: SpeechSegment, frame_rate: float) -> AnalyzedSegment:
        seen.append(segment)
        return await process(segment, frame_rate)

    monkeypatch.setattr(analyzer, "process", recording)
    events = await run_pipeline(audio, analyzer, video=VideoStreamTrack(), video_fps=4.0)
    assert len(events) == 2 and len(seen) == 1
    speech_s = speech.size / RATE
    frames = seen[0].frames
    assert abs(len(frames) - speech_s * 4) <= 3, (len(frames), speech_s)  # none in the 2.5 s of silence
    assert frames[0].ndim == 3 and frames[0].shape[2] == 3 and frames[0].dtype == np.uint8
