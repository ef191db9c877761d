"""Corpus readers: every supported format becomes a :class:`Corpus` of conversations.

A corpus is named on the command line as ``FORMAT:PATH`` (for example
``meld:data/meld/dev_sent_emo.csv``); see :func:`load_corpus`.
"""

from cberl_model.data.conversation import (
    MODALITIES,
    Conversation,
    Corpus,
    CorpusError,
    Utterance,
)
from cberl_model.data.registry import FORMATS, load_corpus

__all__ = [
    "FORMATS",
    "MODALITIES",
    "Conversation",
    "Corpus",
    "CorpusError",
    "Utterance",
    "load_corpus",
]
