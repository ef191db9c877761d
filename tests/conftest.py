"""Shared fixtures: where the shared data lives, and small corpora made from it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

pytest_plugins = ["tests.fixtures_services"]

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def meld_dir() -> Path:
    """MELD's train/dev CSVs (CI checks out ../shared beside the project)."""
    path = SHARED_DATA / "meld"
    assert (path / "dev_sent_emo.csv").is_file(), f"MELD CSVs missing in {path}"
    return path


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """Run a module on one intra-op thread (restored afterwards).

    Its models are tiny, so threads only add overhead; with the two cores shared with
    another job, OpenMP spin-waiting made a 1 s test take minutes.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
