"""The feature spec: which featurizer made each modality's vectors (lightweight, no torch).

A model artifact stores one :class:`ModalitySpec` per modality; the corpus builder's
manifest stores the same entries for the vectors it cached. Kept free of heavy imports so
corpus-builder worker processes start quickly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEXT_ENCODER = "text-encoder"
PRECOMPUTED = "precomputed"


@dataclass(frozen=True)
class ModalitySpec:
    """Which extractor produced a modality's vectors, in which version, of which size.

    Attributes:
        extractor: The featurizer's registered name (see :mod:`cberl_model.features.registry`),
            or ``precomputed`` for vectors that came with the corpus.
        feature_id: The featurizer's version; serving refuses a featurizer whose version differs.
        dim: Vector size.
        options: What the featurizer was built with (e.g. which Whisper model), so serving
            builds the same one. Empty for most featurizers and then left out of the JSON.
    """

    extractor: str
    feature_id: str
    dim: int
    options: dict[str, str] = field(default_factory=dict)


FeatureSpec = dict[str, ModalitySpec]


def spec_to_json(spec: FeatureSpec) -> dict[str, Any]:
    """The spec as stored in a model's ``config.json`` (``options`` only when set)."""
    out: dict[str, Any] = {}
    for m, s in spec.items():
        entry: dict[str, Any] = {"extractor": s.extractor, "feature_id": s.feature_id, "dim": s.dim}
        if s.options:
            entry["options"] = dict(s.options)
        out[m] = entry
    return out


def spec_from_json(data: dict[str, Any]) -> FeatureSpec:
    """Inverse of :func:`spec_to_json`; reads format-1 specs, which have no ``options``."""
    return {m: ModalitySpec(**s) for m, s in data.items()}


def weights_fingerprint(model_dir: Path) -> str:
    """Cheap identity of a model directory's weights: names, sizes and config, not content."""
    digest = hashlib.sha256()
    for file in sorted(model_dir.iterdir()):
        if file.is_file():
            digest.update(f"{file.name}:{file.stat().st_size}".encode())
    digest.update((model_dir / "config.json").read_bytes())
    return digest.hexdigest()[:16]
