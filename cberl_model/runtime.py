"""Process-wide runtime choices: seeding, device, thread count; and invalid settings."""

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


def configure_threads() -> None:
    """Use every core for torch's intra-op pool unless ``OMP_NUM_THREADS`` says otherwise."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)


def default_cache_dir() -> Path:
    """Where adapted encoders and feature matrices are cached (``CBERL_CACHE_DIR``)."""
    return Path(os.environ.get("CBERL_CACHE_DIR", Path.home() / ".cache" / "cberl"))
