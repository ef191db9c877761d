"""Compact binary records: a tagged, versioned JSON header, then float32 vectors.

A call's state (``cberl_model.inference``) and a worker's call record (``workers.state``)
are stored in Redis on every utterance, so they are binary rather than base64 JSON: the
layout is ``magic`` (4 bytes), a version byte, the header's length (uint32 LE), the header
(compact JSON), then a payload. :func:`pack_vectors` / :func:`unpack_vectors` lay out the
per-modality vectors of several items as one float32 run, their sizes kept in the header.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

_HEAD = struct.Struct("<4sBI")  # magic, version, header length


def frame(magic: bytes, version: int, header: Any, payload: bytes = b"") -> bytes:
    """``header`` (JSON-able) and ``payload`` behind the tag ``magic`` and ``version``."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return _HEAD.pack(magic, version, len(head)) + head + payload


def unframe(raw: bytes | memoryview, magic: bytes, version: int, what: str
            ) -> tuple[Any, memoryview]:
    """Inverse of :func:`frame`: ``(header, payload)``.

    Raises:
        ValueError: ``"invalid {what}: ..."`` when ``raw`` is short, has another tag or
            version, or its header is not JSON.
    """
    raw = memoryview(raw)
    if len(raw) < _HEAD.size:
        raise ValueError(f"invalid {what}: {len(raw)} bytes, shorter than the header")
    found, found_version, size = _HEAD.unpack_from(raw)
    if found != magic:
        raise ValueError(f"invalid {what}: magic {bytes(found)!r}, expected {magic!r}")
    if found_version != version:
        raise ValueError(f"invalid {what}: layout version {found_version}, this code reads {version}")
    try:
        header = json.loads(bytes(raw[_HEAD.size:_HEAD.size + size]))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"invalid {what}: {type(exc).__name__}: {exc}") from exc
    return header, raw[_HEAD.size + size:]


def pack_vectors(items: Sequence[Mapping[str, np.ndarray]]) -> tuple[list[dict[str, int]], bytes]:
    """Each item's ``{modality: size}`` (for the header) and all vectors as float32 LE."""
    sizes = [{m: int(v.size) for m, v in item.items()} for item in items]
    vectors = [np.asarray(v, dtype="<f4").ravel() for item in items for v in item.values()]
    return sizes, np.concatenate(vectors).tobytes() if vectors else b""


def unpack_vectors(sizes: Sequence[Mapping[str, int]], payload: bytes | memoryview
                   ) -> list[dict[str, np.ndarray]]:
    """Inverse of :func:`pack_vectors` (float32 copies).

    Raises:
        ValueError: When ``payload`` holds fewer or more floats than ``sizes`` say.
    """
    floats = np.frombuffer(payload, dtype="<f4").astype(np.float32)
    out, at = [], 0
    for item in sizes:
        vectors = {}
        for modality, size in item.items():
            if at + size > floats.size:
                raise ValueError("the vectors are truncated")
            vectors[str(modality)] = floats[at:at + size]
            at += size
        out.append(vectors)
    if at != floats.size:
        raise ValueError(f"{floats.size - at} floats left over after the last vector")
    return out
