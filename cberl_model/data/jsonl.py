"""The project's own corpus format: JSON Lines, one utterance per line.

CSV exports of research corpora cannot carry call-centre data (per-call ids, timings,
pre-computed features), so the project defines a format of its own. An optional first
line ``{"labels": [...]}`` fixes the label set and its class order; without it the labels
must all be MELD's, so a MELD-trained model can score the file directly.

Example::

    {"labels": ["neutral", "angry", "happy"]}
    {"conversation_id": "call-7", "speaker": "agent", "text": "Hello!", "label": "happy"}
    {"conversation_id": "call-7", "speaker": "caller", "label": "angry",
     "features": {"audio": [0.1, 0.2]}}

(each record on one line in a real file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    ValidationError,
    field_validator,
    model_validator,
)

from cberl_model.data.conversation import (
    MODALITIES,
    Conversation,
    Corpus,
    CorpusError,
    Utterance,
)
from cberl_model.data.meld import MELD_LABELS

FeatureVector = Annotated[list[FiniteFloat], Field(min_length=1)]
"""A non-empty list of finite floats: NaN or infinity would silently poison training."""


class JsonlHeader(BaseModel):
    """The optional first line, giving the label set in class-index order."""

    model_config = ConfigDict(extra="forbid", strict=True)

    labels: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)

    @field_validator("labels")
    @classmethod
    def _distinct(cls, labels: list[str]) -> list[str]:
        """A repeated label would give one class two indices."""
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"repeated label(s) {', '.join(repeated)}")
        return labels


class JsonlUtterance(BaseModel):
    """One utterance line. Strict: a number where a string belongs is an error, not a guess.

    ``audio`` and ``video`` are media file paths, relative to the JSONL file's folder (or
    absolute); the corpus builder featurizes them. A video file's audio track serves as the
    utterance's audio when ``audio`` is not given.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    conversation_id: str = Field(min_length=1)
    speaker: str
    utterance_id: str | None = Field(default=None, min_length=1)
    text: str | None = None
    label: str | None = None
    audio: str | None = None
    video: str | None = None
    start_ms: int | None = Field(default=None, ge=0)
    end_ms: int | None = Field(default=None, ge=0)
    features: dict[str, FeatureVector] = Field(default_factory=dict)

    @field_validator("features")
    @classmethod
    def _known_modalities(cls, features: dict[str, list[float]]) -> dict[str, list[float]]:
        """Only modalities the model has an encoder for can be used."""
        unknown = [name for name in features if name not in MODALITIES]
        if unknown:
            raise ValueError(
                f"unknown modality {', '.join(map(repr, unknown))}; "
                f"expected {', '.join(MODALITIES)}"
            )
        return features

    @model_validator(mode="after")
    def _ordered_times(self) -> JsonlUtterance:
        """An utterance cannot end before it starts."""
        if self.start_ms is not None and self.end_ms is not None and self.end_ms < self.start_ms:
            raise ValueError(f"end_ms {self.end_ms} is before start_ms {self.start_ms}")
        return self


_Model = TypeVar("_Model", JsonlHeader, JsonlUtterance)

_Record = tuple[int, JsonlUtterance]
"""An utterance line with its 1-based line number."""


def read_jsonl(path: str | Path) -> Corpus:
    """Read a JSONL corpus.

    Blank lines are skipped. Conversations appear in order of first appearance and keep
    their utterances in file order; a missing ``utterance_id`` becomes
    ``{conversation_id}_{index in conversation}``.

    Raises:
        CorpusError: On a missing or non-UTF-8 file, a file without utterances, or a line
            with invalid JSON, a schema violation, an unknown label, a duplicated
            utterance id or features whose dimension differs from earlier lines; the
            message names the file and the line (as ``row``).
    """
    path = Path(path)
    source = str(path)
    header, records = _parse_lines(path, source)
    if not records:
        raise CorpusError(source, "no utterances")
    labels = header if header is not None else _implied_labels(source, records)
    return Corpus(
        name=f"jsonl:{source}",
        labels=labels,
        conversations=_conversations(source, records, labels),
    )


def write_jsonl(corpus: Corpus, path: str | Path) -> None:
    """Write a corpus as JSONL (header line first) that :func:`read_jsonl` reads back.

    Raises:
        CorpusError: If an utterance cannot be represented (e.g. non-finite features), so
            an unreadable file is never written silently.
    """
    path = Path(path)
    lines = [_json_line({"labels": list(corpus.labels)})]
    for conv in corpus.conversations:
        lines.extend(_json_line(_record(str(path), conv.conversation_id, u)) for u in conv)
    path.write_text("".join(lines), encoding="utf-8")


def _parse_lines(path: Path, source: str) -> tuple[tuple[str, ...] | None, list[_Record]]:
    """Validate every non-blank line; return the header's labels (if any) and utterances."""
    if not path.is_file():
        raise CorpusError(source, "file not found")
    header: tuple[str, ...] | None = None
    records: list[_Record] = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                data = _json_value(source, number, line)
                is_first = header is None and not records
                if is_first and isinstance(data, dict) and "labels" in data:
                    header = tuple(_validate(JsonlHeader, source, number, data).labels)
                else:
                    records.append((number, _validate(JsonlUtterance, source, number, data)))
    except UnicodeDecodeError as exc:
        raise CorpusError(source, f"not UTF-8 text ({exc.reason})") from exc
    return header, records


def _json_value(source: str, number: int, line: str) -> Any:
    """Decode one line, with an error naming the line and column."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise CorpusError(
            source, f"invalid JSON: {exc.msg} (column {exc.colno})", row=number
        ) from exc


def _validate(model: type[_Model], source: str, number: int, data: Any) -> _Model:
    """Validate one decoded line against a schema, keeping pydantic's messages short."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc']))}: {err['msg']}" if err["loc"] else err["msg"]
            for err in exc.errors()
        )
        raise CorpusError(source, f"invalid {model.__name__}: {problems}", row=number) from exc


def _implied_labels(source: str, records: list[_Record]) -> tuple[str, ...]:
    """Without a header the labels must all be MELD's, and MELD's label set is used."""
    for number, record in records:
        if record.label is not None and record.label not in MELD_LABELS:
            raise CorpusError(
                source,
                f"label {record.label!r} is not a MELD label; a header line "
                '{"labels": [...]} with the label set is required for labels outside '
                "MELD's",
                row=number,
            )
    return MELD_LABELS


def _conversations(
    source: str, records: list[_Record], labels: tuple[str, ...]
) -> list[Conversation]:
    """Group utterances by conversation, checking labels, ids and feature dimensions.

    Feature dimensions are checked here rather than with ``Corpus.feature_dims`` so that
    the error can name the offending line and the line that set the dimension.
    """
    grouped: dict[str, list[Utterance]] = {}
    first_line: dict[str, int] = {}
    dims: dict[str, tuple[int, int]] = {}
    for number, record in records:
        utterances = grouped.setdefault(record.conversation_id, [])
        uid = record.utterance_id or f"{record.conversation_id}_{len(utterances)}"
        if uid in first_line:
            raise CorpusError(
                source, f"utterance_id {uid!r} already used on line {first_line[uid]}", row=number
            )
        first_line[uid] = number
        if record.label is not None and record.label not in labels:
            raise CorpusError(
                source,
                f"unknown label {record.label!r}; expected one of {', '.join(labels)}",
                row=number,
            )
        utterances.append(
            Utterance(
                utterance_id=uid,
                speaker=record.speaker,
                text=record.text,
                label=record.label,
                features=_features(source, number, record.features, dims),
                start_ms=record.start_ms,
                end_ms=record.end_ms,
                audio_path=_media_path(source, record.audio),
                video_path=_media_path(source, record.video),
            )
        )
    return [Conversation(cid, utterances) for cid, utterances in grouped.items()]


def _media_path(source: str, path: str | None) -> str | None:
    """An absolute media path: relative ones are resolved against the JSONL file's folder.

    Absolute, so that a corpus written elsewhere by :func:`write_jsonl` still finds them.
    """
    if not path:
        return None
    return str((Path(source).parent / path).resolve())


def _features(
    source: str, number: int, raw: dict[str, list[float]], dims: dict[str, tuple[int, int]]
) -> dict[str, np.ndarray]:
    """Float32 vectors, each checked against the first dimension seen for its modality."""
    features: dict[str, np.ndarray] = {}
    for name, values in raw.items():
        dim, line = dims.setdefault(name, (len(values), number))
        if len(values) != dim:
            raise CorpusError(
                source,
                f"{name} features have dimension {len(values)}, line {line} has {dim}",
                row=number,
            )
        features[name] = np.asarray(values, dtype=np.float32)
    return features


def _record(source: str, conversation_id: str, utt: Utterance) -> dict[str, Any]:
    """One utterance as a JSON-ready dict, validated like a line being read."""
    try:
        record = JsonlUtterance(
            conversation_id=conversation_id,
            speaker=utt.speaker,
            utterance_id=utt.utterance_id,
            text=utt.text,
            label=utt.label,
            start_ms=utt.start_ms,
            end_ms=utt.end_ms,
            audio=utt.audio_path,
            video=utt.video_path,
            features={name: vec.tolist() for name, vec in utt.features.items()},
        )
    except ValidationError as exc:
        raise CorpusError(
            source, f"utterance {utt.utterance_id!r} cannot be written: {exc}"
        ) from exc
    return record.model_dump(exclude_defaults=True)


def _json_line(data: dict[str, Any]) -> str:
    """One JSON object per line, keeping non-ASCII text (curly apostrophes) readable."""
    return json.dumps(data, ensure_ascii=False) + "\n"
