"""Decode an utterance's media files into what the featurizers take.

Audio becomes 16 kHz mono float32 (any container or codec FFmpeg reads, via PyAV); video
becomes RGB frames sampled at :data:`~cberl_model.features.media.FRAME_RATE`. The
streamer receives the same kinds of arrays from a live call.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from cberl_model.features.media import FRAME_RATE, MAX_FRAMES, SAMPLE_RATE, UtteranceMedia


class MediaError(ValueError):
    """A media file is missing, unreadable, or lacks the stream asked for."""


class MissingStreamError(MediaError):
    """A readable media file has no stream of the kind asked for (e.g. a silent video)."""


def decode_audio(path: str | Path) -> np.ndarray:
    """All of the file's first audio stream as 16 kHz mono float32 samples.

    Raises:
        MediaError: If the file is missing, corrupt or has no audio stream.
    """
    with _opened(path) as container:
        if not container.streams.audio:
            raise MissingStreamError(f"{path}: no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks = []
        try:
            for frame in container.decode(container.streams.audio[0]):
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
        except av.FFmpegError as exc:
            raise MediaError(f"{path}: cannot decode audio: {exc}") from exc
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def sample_frames(path: str | Path, frame_rate: float = FRAME_RATE,
                  max_frames: int = MAX_FRAMES) -> tuple[list[np.ndarray], float]:
    """RGB frames of the first video stream, one per ``1 / rate`` seconds, and that rate.

    The rate is ``frame_rate``, lowered to ``max_frames / duration`` for long clips.

    Raises:
        MediaError: If the file is missing, corrupt or has no video stream.
    """
    with _opened(path) as container:
        if not container.streams.video:
            raise MissingStreamError(f"{path}: no video stream")
        stream = container.streams.video[0]
        duration_s = float(stream.duration * stream.time_base) if stream.duration and \
            stream.time_base else (container.duration or 0) / av.time_base
        rate = min(frame_rate, max_frames / duration_s) if duration_s > 0 else frame_rate
        frames: list[np.ndarray] = []
        first: float | None = None
        try:
            for index, frame in enumerate(container.decode(stream)):
                time_s = frame.time if frame.time is not None else index / float(stream.average_rate or 25)
                first = time_s if first is None else first
                if time_s - first >= len(frames) / rate and len(frames) < max_frames:
                    frames.append(frame.to_ndarray(format="rgb24"))
        except av.FFmpegError as exc:
            raise MediaError(f"{path}: cannot decode video: {exc}") from exc
    return frames, rate


def read_media(text: str | None, audio_path: str | Path | None,
               video_path: str | Path | None, frame_rate: float = FRAME_RATE) -> UtteranceMedia:
    """One utterance's media; a video's own audio track is used when no audio file is given.

    Raises:
        MediaError: If a given file cannot be read (a video without an audio track is fine
            when there is no separate audio file: the audio is then absent).
    """
    frames: list[np.ndarray] = []
    rate = 0.0
    if video_path is not None:
        frames, rate = sample_frames(video_path, frame_rate)
    audio = None
    if audio_path is not None:
        audio = decode_audio(audio_path)
    elif video_path is not None:
        try:
            audio = decode_audio(video_path)
        except MissingStreamError:
            audio = None
    return UtteranceMedia(text=text, audio=audio, frames=tuple(frames), frame_rate=rate)


def _opened(path: str | Path) -> av.container.InputContainer:
    if not Path(path).is_file():
        raise MediaError(f"{path}: file not found")
    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise MediaError(f"{path}: not a readable media file: {exc}") from exc
