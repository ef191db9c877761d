"""The in-memory representation of labelled conversations.

Every corpus reader (MELD CSV, EmoryNLP CSV, MERC feature pickles, the project's JSONL)
produces the same three types, so the trainer, the evaluator and the inference API never
see a file format.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MODALITIES: tuple[str, ...] = ("text", "audio", "visual")
"""Modalities the model knows, in the order used everywhere (feature spec, fusion)."""


class CorpusError(ValueError):
    """A corpus file cannot be read; the message names the file and, where known, the row."""

    def __init__(self, source: str, message: str, row: int | None = None) -> None:
        where = f"{source}, row {row}" if row is not None else source
        super().__init__(f"{where}: {message}")
        self.source = source
        self.row = row


@dataclass
class Utterance:
    """One utterance of a conversation.

    Attributes:
        utterance_id: Stable id, unique in its corpus (the idempotency key downstream).
        speaker: Speaker name or id as the corpus gives it.
        text: Transcript, or ``None`` when the corpus carries only features.
        label: Emotion label (lower case), or ``None`` when unlabelled.
        features: Pre-computed per-modality vectors (e.g. from a MERC pickle); a modality
            that is absent is simply not a key.
        start_ms: Start time in milliseconds from the conversation start, if known.
        end_ms: End time in milliseconds, if known.
        audio_path / video_path: Raw media of the utterance (the corpus builder featurizes
            them), or ``None``.
    """

    utterance_id: str
    speaker: str
    text: str | None = None
    label: str | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)
    start_ms: int | None = None
    end_ms: int | None = None
    audio_path: str | None = None
    video_path: str | None = None


@dataclass
class Conversation:
    """An ordered list of utterances sharing one context (a dialogue, a scene, a call)."""

    conversation_id: str
    utterances: list[Utterance]

    def __len__(self) -> int:
        return len(self.utterances)

    def __iter__(self) -> Iterator[Utterance]:
        return iter(self.utterances)


@dataclass
class Corpus:
    """A set of conversations with their label set.

    Attributes:
        name: Human-readable name, usually ``FORMAT:PATH``.
        labels: The label set in index order (index ``i`` is class ``i`` of the model).
        conversations: The conversations, in file order.
        feature_sources: Per modality, the feature-spec entry (``extractor``,
            ``feature_id``, ``dim``, ``options``) of the featurizer that computed the
            corpus's vectors; empty for vectors of unknown origin (treated as pre-computed).
    """

    name: str
    labels: tuple[str, ...]
    conversations: list[Conversation]
    feature_sources: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        known = set(self.labels)
        for conv in self.conversations:
            if not conv.utterances:
                raise CorpusError(self.name, f"conversation {conv.conversation_id!r} is empty")
            for utt in conv.utterances:
                if utt.label is not None and utt.label not in known:
                    raise CorpusError(
                        self.name,
                        f"utterance {utt.utterance_id!r} has unknown label {utt.label!r}; "
                        f"expected one of {', '.join(self.labels)}",
                    )

    @property
    def num_utterances(self) -> int:
        """Total number of utterances over all conversations."""
        return sum(len(c) for c in self.conversations)

    def utterances(self) -> Iterator[Utterance]:
        """Iterate over every utterance in conversation order."""
        for conv in self.conversations:
            yield from conv.utterances

    def label_counts(self) -> dict[str, int]:
        """Number of labelled utterances per class, in label-set order."""
        counts = dict.fromkeys(self.labels, 0)
        for utt in self.utterances():
            if utt.label is not None:
                counts[utt.label] += 1
        return counts

    def label_indices(self) -> np.ndarray:
        """Class index per utterance (``-1`` where unlabelled), in corpus order."""
        index: Mapping[str, int] = {label: i for i, label in enumerate(self.labels)}
        return np.array(
            [index[u.label] if u.label is not None else -1 for u in self.utterances()],
            dtype=np.int64,
        )

    def content_hash(self) -> str:
        """SHA-256 over ids, speakers, texts and labels: identifies the training data."""
        digest = hashlib.sha256()
        digest.update("\x1f".join(self.labels).encode())
        for conv in self.conversations:
            digest.update(b"\x1e" + conv.conversation_id.encode())
            for u in conv.utterances:
                digest.update(
                    "\x1f".join((u.utterance_id, u.speaker, u.text or "", u.label or "")).encode()
                )
                for name in sorted(u.features):
                    digest.update(name.encode() + np.ascontiguousarray(u.features[name]).tobytes())
        return digest.hexdigest()

    def feature_dims(self) -> dict[str, int]:
        """Dimensions of the pre-computed features present in this corpus.

        Raises:
            CorpusError: If a modality's vectors do not all have the same dimension.
        """
        dims: dict[str, int] = {}
        for utt in self.utterances():
            for name, vec in utt.features.items():
                if vec.ndim != 1:
                    raise CorpusError(
                        self.name,
                        f"utterance {utt.utterance_id!r}: {name} features must be a vector, "
                        f"got shape {tuple(vec.shape)}",
                    )
                expected = dims.setdefault(name, int(vec.shape[0]))
                if vec.shape[0] != expected:
                    raise CorpusError(
                        self.name,
                        f"utterance {utt.utterance_id!r}: {name} features have dimension "
                        f"{vec.shape[0]}, earlier utterances have {expected}",
                    )
        return dims
