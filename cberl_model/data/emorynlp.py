"""Reader for EmoryNLP's CSV files as redistributed with MELD (``emorynlp_*_final.csv``)."""

from __future__ import annotations

import ast
from pathlib import Path

from cberl_model.data.conversation import Conversation, Corpus, CorpusError, Utterance
from cberl_model.data.csv_common import parse_int, parse_label, parse_time_ms, read_rows

EMORYNLP_LABELS: tuple[str, ...] = (
    "neutral", "joyful", "scared", "mad", "peaceful", "powerful", "sad",
)
"""EmoryNLP's seven emotions (Willcox's feeling wheel), lower-cased."""

_COLUMNS = ("Utterance", "Speaker", "Emotion", "Scene_ID", "Utterance_ID", "Season", "Episode")


def _speaker(source: str, line: int, raw: str) -> str:
    """EmoryNLP writes speakers as a Python list literal: ``['Rachel Green']``."""
    raw = raw.strip()
    if not raw.startswith("["):
        return raw
    try:
        names = ast.literal_eval(raw)
    except (ValueError, SyntaxError) as exc:
        raise CorpusError(source, f"unreadable speaker list {raw!r}", row=line) from exc
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CorpusError(source, f"speaker must be a list of names, got {raw!r}", row=line)
    return " & ".join(names) if names else "unknown"


def read_emorynlp_csv(path: str | Path) -> Corpus:
    """Read an EmoryNLP CSV into a corpus of scenes keyed by (season, episode, scene).

    Raises:
        CorpusError: On a missing column, a non-integer id, an unknown emotion or a
            duplicated utterance, naming the file and row.
    """
    path = Path(path)
    source = str(path)
    scenes: dict[tuple[int, int, int], list[tuple[int, Utterance]]] = {}
    seen: dict[tuple[int, int, int, int], int] = {}
    for line, row in read_rows(path, _COLUMNS):
        key = (
            parse_int(source, line, "Season", row["Season"]),
            parse_int(source, line, "Episode", row["Episode"]),
            parse_int(source, line, "Scene_ID", row["Scene_ID"]),
        )
        utt = parse_int(source, line, "Utterance_ID", row["Utterance_ID"])
        if (*key, utt) in seen:
            raise CorpusError(
                source, f"scene {key} utterance {utt} already appeared at row {seen[(*key, utt)]}",
                row=line,
            )
        seen[(*key, utt)] = line
        season, episode, scene = key
        utterance = Utterance(
            utterance_id=f"s{season:02d}e{episode:02d}c{scene:02d}u{utt:02d}",
            speaker=_speaker(source, line, row["Speaker"]),
            text=row["Utterance"].strip(),
            label=parse_label(source, line, row["Emotion"], EMORYNLP_LABELS),
            start_ms=parse_time_ms(row.get("Start_Time", "")),
            end_ms=parse_time_ms(row.get("End_Time", "")),
        )
        scenes.setdefault(key, []).append((utt, utterance))
    if not scenes:
        raise CorpusError(source, "no utterances")
    conversations = [
        Conversation(f"s{s:02d}e{e:02d}c{c:02d}", [u for _, u in sorted(items, key=lambda p: p[0])])
        for (s, e, c), items in scenes.items()
    ]
    return Corpus(name=f"emorynlp:{source}", labels=EMORYNLP_LABELS, conversations=conversations)
