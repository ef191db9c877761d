"""Shared fixtures: where the shared data lives, and small corpora made from it."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def meld_dir() -> Path:
    """MELD's train/dev CSVs (CI checks out ../shared beside the project)."""
    path = SHARED_DATA / "meld"
    assert (path / "dev_sent_emo.csv").is_file(), f"MELD CSVs missing in {path}"
    return path
