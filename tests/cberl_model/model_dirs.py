"""Model-directory surgery for tests: a private copy, with its ``config.json`` edited.

Tests of loading failures (mismatched featurizers, tampered encoders, wrong specs) need a
damaged copy of a good artifact; this is the one place that knows the card's file name.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

CardChange = Callable[[dict[str, Any]], None]


def edit_config(path: Path, change: CardChange) -> None:
    """Rewrite ``path/config.json`` after ``change`` mutated the parsed card in place."""
    card = json.loads((path / "config.json").read_text())
    change(card)
    (path / "config.json").write_text(json.dumps(card))


def copy_model(source: Path, target: Path, change: CardChange | None = None) -> Path:
    """Copy the model directory ``source`` to ``target``, then apply ``change`` to its card."""
    shutil.copytree(source, target)
    if change is not None:
        edit_config(target, change)
    return target
