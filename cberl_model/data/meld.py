"""Reader for MELD's released CSV files (``train_sent_emo.csv``, ``dev_sent_emo.csv``, ...)."""

from __future__ import annotations

from pathlib import Path

from cberl_model.data.conversation import Conversation, Corpus, CorpusError, Utterance
from cberl_model.data.csv_common import parse_int, parse_label, parse_time_ms, read_rows

MELD_LABELS: tuple[str, ...] = (
    "neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear",
)
"""MELD's seven emotions, most frequent first (the order of the class indices)."""

_COLUMNS = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")


def read_meld_csv(path: str | Path) -> Corpus:
    """Read a MELD CSV into a corpus of dialogues.

    Utterances are grouped by ``Dialogue_ID`` (in order of first appearance) and sorted by
    ``Utterance_ID``. Utterance ids follow MELD's media naming, ``dia{D}_utt{U}``, so the
    raw release's ``dia{D}_utt{U}.mp4`` files can be matched to rows.

    Raises:
        CorpusError: On a missing column, a non-integer id, an unknown emotion or a
            duplicated (dialogue, utterance) pair, naming the file and row.
    """
    path = Path(path)
    source = str(path)
    dialogues: dict[int, list[tuple[int, Utterance]]] = {}
    seen: dict[tuple[int, int], int] = {}
    for line, row in read_rows(path, _COLUMNS):
        dia = parse_int(source, line, "Dialogue_ID", row["Dialogue_ID"])
        utt = parse_int(source, line, "Utterance_ID", row["Utterance_ID"])
        if (dia, utt) in seen:
            raise CorpusError(
                source, f"dialogue {dia} utterance {utt} already appeared at row {seen[dia, utt]}",
                row=line,
            )
        seen[dia, utt] = line
        utterance = Utterance(
            utterance_id=f"dia{dia}_utt{utt}",
            speaker=row["Speaker"].strip(),
            text=row["Utterance"].strip(),
            label=parse_label(source, line, row["Emotion"], MELD_LABELS),
            start_ms=parse_time_ms(row.get("StartTime", "")),
            end_ms=parse_time_ms(row.get("EndTime", "")),
        )
        dialogues.setdefault(dia, []).append((utt, utterance))
    if not dialogues:
        raise CorpusError(source, "no utterances")
    conversations = [
        Conversation(f"dia{dia}", [u for _, u in sorted(items, key=lambda pair: pair[0])])
        for dia, items in dialogues.items()
    ]
    return Corpus(name=f"meld:{source}", labels=MELD_LABELS, conversations=conversations)
