"""``FORMAT:PATH`` corpus specs, resolved to the reader for that format."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cberl_model.data.cached import read_cached
from cberl_model.data.conversation import Corpus, CorpusError
from cberl_model.data.emorynlp import read_emorynlp_csv
from cberl_model.data.jsonl import read_jsonl
from cberl_model.data.meld import read_meld_csv
from cberl_model.data.merc_pickle import read_merc_pickle

FORMATS: dict[str, Callable[[Path], Corpus]] = {
    "meld": read_meld_csv,
    "emorynlp": read_emorynlp_csv,
    "jsonl": read_jsonl,
    "merc": read_merc_pickle,
    "cached": read_cached,
}
"""Reader per format name. ``merc`` takes ``PATH#SPLIT`` (split: train, test or all);
``cached`` takes a directory written by ``python -m cberl_model.corpus build``."""


def load_corpus(spec: str) -> Corpus:
    """Load a corpus from a ``FORMAT:PATH`` spec.

    Examples:
        ``meld:MELD/dev_sent_emo.csv``, ``emorynlp:emorynlp_dev_final.csv``,
        ``jsonl:calls.jsonl``, ``merc:MELD_features_raw.pkl#train``,
        ``cached:built/meld-train``.

    Raises:
        CorpusError: If the format is unknown or the file cannot be read.
    """
    fmt, sep, path = spec.partition(":")
    if not sep or not path:
        raise CorpusError(spec, f"expected FORMAT:PATH with FORMAT one of {', '.join(FORMATS)}")
    reader = FORMATS.get(fmt.lower())
    if reader is None:
        raise CorpusError(spec, f"unknown corpus format {fmt!r}; known: {', '.join(FORMATS)}")
    return reader(Path(path))
