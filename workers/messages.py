"""The ``utterances`` topic's records as the worker holds them: parsed once, vectors as arrays.

A record is validated once, at the topic boundary (:func:`parse_message`, the contract's
pydantic model), and its feature vectors become float32 arrays there; everything after
(ordering, the held early utterances in Redis, the recognizer) passes those arrays on and
never converts them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from contracts.events import CallEnded, ModalityFeatures, UtteranceEvent, parse_utterances_message


@dataclass(frozen=True)
class Utterance:
    """An utterance event, its vectors taken out as arrays.

    Attributes:
        event: The event, with empty ``features`` (the vectors are in ``vectors``).
        vectors: Its float32 vector per modality (absent modalities left out).
    """

    event: UtteranceEvent
    vectors: dict[str, np.ndarray]

    @property
    def call_id(self) -> str:
        return self.event.call_id

    @property
    def seq(self) -> int:
        return self.event.seq

    @property
    def utterance_id(self) -> str:
        return self.event.utterance_id

    @classmethod
    def of(cls, event: UtteranceEvent) -> Utterance:
        """Take the vectors out of a validated event (the one conversion to arrays)."""
        vectors = {m: np.asarray(v, dtype=np.float32) for m, v in event.features.as_dict().items()
                   if v is not None}
        return cls(event.model_copy(update={"features": ModalityFeatures()}), vectors)

    def header(self) -> dict[str, Any]:
        """The event without its vectors, JSON-safe (what Redis keeps beside the arrays)."""
        return self.event.model_dump(mode="json", exclude={"features"})

    @classmethod
    def from_header(cls, header: dict[str, Any], vectors: dict[str, np.ndarray]) -> Utterance:
        """Inverse of :meth:`header` plus the vectors (validated again: it comes from Redis)."""
        return cls(UtteranceEvent.model_validate(header), vectors)


def parse_message(raw: bytes | str) -> Utterance | CallEnded:
    """Parse one ``utterances`` record. Raises :class:`pydantic.ValidationError`."""
    message = parse_utterances_message(raw)
    return Utterance.of(message) if isinstance(message, UtteranceEvent) else message
