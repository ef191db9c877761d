"""Helpers shared by the CSV corpus readers (MELD, EmoryNLP)."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

from cberl_model.data.conversation import CorpusError

_TIME = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})$")


def read_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line_number, row)`` for every data row of a UTF-8 CSV file.

    Raises:
        CorpusError: If the file is missing, not UTF-8, or lacks a required column.
    """
    source = str(path)
    if not path.is_file():
        raise CorpusError(source, "file not found")
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise CorpusError(source, f"missing column(s) {', '.join(missing)}", row=1)
            for row in reader:
                yield reader.line_num, row
    except UnicodeDecodeError as exc:
        raise CorpusError(source, f"not UTF-8 text ({exc.reason})") from exc
    except csv.Error as exc:
        raise CorpusError(source, f"malformed CSV: {exc}") from exc


def parse_time_ms(value: str) -> int | None:
    """Parse ``HH:MM:SS,mmm`` (MELD) or ``HH:MM:SS.mmm`` (EmoryNLP) into milliseconds."""
    match = _TIME.match(value.strip())
    if not match:
        return None
    hours, minutes, seconds, millis = match.groups()
    return ((int(hours) * 60 + int(minutes)) * 60 + int(seconds)) * 1000 + int(millis.ljust(3, "0"))


def parse_label(source: str, line: int, raw: str, labels: tuple[str, ...]) -> str:
    """Normalise a label to lower case and check it belongs to the label set."""
    label = raw.strip().lower()
    if label not in labels:
        raise CorpusError(
            source, f"unknown label {raw!r}; expected one of {', '.join(labels)}", row=line
        )
    return label


def parse_int(source: str, line: int, column: str, raw: str) -> int:
    """Parse an integer id column, with an error naming the column and row."""
    try:
        return int(raw.strip())
    except ValueError as exc:
        raise CorpusError(source, f"column {column} is not an integer: {raw!r}", row=line) from exc
