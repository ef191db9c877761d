"""Process-wide runtime choices: seeding, device, serving precision, thread count; and invalid
settings."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch


class ConfigError(ValueError):
    """A setting the user chose (a flag, a config file, a recipe) is invalid.

    A user error: the commands print it as one line and exit with status 2 (a bare
    :class:`ValueError` is a bug and keeps its traceback).
    """


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def select_device(requested: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cpu``/``cuda[:N]`` are taken as given.

    Raises:
        ConfigError: If ``requested`` is not a device name, or names CUDA on a machine without it.
    """
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {requested!r}: expected auto, cpu or cuda[:N]") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {requested!r} requested but CUDA is not available")
    return device


PRECISIONS: dict[str, torch.dtype | None] = {"auto": None, "float32": torch.float32,
                                              "bfloat16": torch.bfloat16}
"""The text encoder's serving precisions (``auto`` picks one per device)."""


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 matrix products in hardware (a CPU without
    AVX512-BF16 or AMX emulates them, slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def select_precision(requested: str, device: torch.device) -> torch.dtype:
    """The dtype the text encoder serves in on ``device``.

    ``auto`` is bfloat16 on a CUDA device that has it, float32 on a CPU. On this project's
    2-core EPYC (AVX512-BF16) bfloat16 halves mpnet's time per utterance when the encoder
    runs alone (``benchmarks/text_encoder_cost.py``) and keeps the MELD dev scores, but in
    live calls at 8 concurrent calls, with the ASR and the clients on the same cores, its
    revision-0 p95 was worse than float32's in 2 of 4 runs (README, "Serving precision"), so
    a CPU gets it only when asked for.

    Raises:
        ConfigError: If ``requested`` is not one of :data:`PRECISIONS`.
    """
    if requested not in PRECISIONS:
        raise ConfigError(f"unknown encoder precision {requested!r}: expected "
                          f"{', '.join(PRECISIONS)}")
    dtype = PRECISIONS[requested]
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" and native_bfloat16(device) else torch.float32
    return dtype


def configure_threads() -> None:
    """Use every core for torch's intra-op pool unless ``OMP_NUM_THREADS`` says otherwise."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)


def default_cache_dir() -> Path:
    """Where adapted encoders and feature matrices are cached (``CBERL_CACHE_DIR``)."""
    return Path(os.environ.get("CBERL_CACHE_DIR", Path.home() / ".cache" / "cberl"))
