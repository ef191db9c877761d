"""What ASR actually hears: corpus texts spoken by espeak-ng and transcribed by Whisper.

A model trained on clean transcripts meets Whisper's output on a live call (lower case,
dropped fillers, misheard words). :func:`asr_corpus` turns a corpus into the same
conversations with each utterance's text replaced by its ASR transcript: the text is spoken
by espeak-ng in one of :data:`VOICES` (chosen per utterance, seeded, so a corpus hears
several voices) and transcribed by the ``transcribe`` callable the caller passes
(:func:`streamer_transcriber`: the streamer's :class:`streamer.asr.Transcriber` with its
settings, so training and evaluation hear what a call would; imported only when used).
Transcripts are cached per ``(text, voice, transcriber id)`` in ``cache_dir/asr/``, one JSON
line each, so a second run and a resumed one transcribe nothing twice. About 0.15 s per
utterance on one core (MELD dev: 1,074 in about 2.7 minutes).

Needs the ``espeak-ng`` and ``sox`` programs (``deploy/system-packages.sh``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from cberl_model.data import Conversation, Corpus
from deploy.speech import speak

log = logging.getLogger(__name__)

VOICES: tuple[tuple[str, int], ...] = (("en-us", 150), ("en-gb", 165), ("en-029", 140),
                                       ("en-gb-scotland", 155))
"""espeak-ng (voice, words per minute) pairs an utterance may be spoken with."""

Transcribe = Callable[[Sequence[np.ndarray]], list[str]]
"""A batch of 16 kHz mono float32 segments -> their transcripts."""


PAD_S = 0.1
"""Silence kept on each side, as the streamer's endpointer pads a segment (speech_pad_ms)."""
ASR_SEED = 0
"""Seed of the voices and of the share heard in training: every training seed and fold
hears the same utterances the same way, so their transcripts are shared."""


class TranscriptCache:
    """``(text, voice, transcriber)`` -> transcript, appended to one JSONL file as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: dict[str, str] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    record = json.loads(line)
                    self.items[record["key"]] = record["asr"]

    @staticmethod
    def key(text: str, voice: str, rate_wpm: int, transcriber_id: str) -> str:
        payload = json.dumps([text, voice, rate_wpm, transcriber_id])
        return hashlib.sha256(payload.encode()).hexdigest()[:20]

    def add(self, key: str, asr: str) -> None:
        self.items[key] = asr
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"key": key, "asr": asr}) + "\n")


def _draw(utterance_id: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}/{utterance_id}".encode()).digest()


def voice_for(utterance_id: str, seed: int) -> tuple[str, int]:
    """The voice one utterance is spoken with: a seeded hash of its id."""
    return VOICES[_draw(utterance_id, seed)[0] % len(VOICES)]


def is_chosen(utterance_id: str, seed: int, fraction: float) -> bool:
    """Whether an utterance is in the seeded ``fraction`` heard through ASR.

    A hash of the id, not a draw in corpus order: train alone and train pooled with dev
    (cross-validation) choose the same train utterances, so they share transcripts."""
    return int.from_bytes(_draw(utterance_id, seed)[1:9], "big") < fraction * 2 ** 64


def asr_corpus(corpus: Corpus, transcribe: Transcribe, transcriber_id: str, cache_dir: Path,
               seed: int = 0, fraction: float = 1.0, batch_size: int = 8,
               name_suffix: str = "+asr") -> Corpus:
    """The corpus with texts replaced by what ASR hears (a seeded ``fraction`` of them).

    Utterances outside the fraction keep their text; an utterance whose transcript is
    empty keeps an empty text (as a live call would have it).

    Args:
        corpus: Conversations with texts.
        transcribe: Batch ASR (see :data:`Transcribe`).
        transcriber_id: Names the ASR model and settings (part of the cache key).
        cache_dir: Where ``asr/transcripts.jsonl`` lives.
        seed: Chooses voices and the fraction.
        fraction: Share of utterances to replace, in (0, 1].
        batch_size: Segments per ``transcribe`` call.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
    cache = TranscriptCache(cache_dir / "asr" / "transcripts.jsonl")

    # ids repeat across pooled parts, so the choice is made per utterance, once
    keys: dict[tuple[int, int], str] = {}
    todo: dict[str, tuple[str, str, int]] = {}
    for c, conv in enumerate(corpus.conversations):
        for i, utt in enumerate(conv.utterances):
            if utt.text and utt.text.strip() and is_chosen(utt.utterance_id, seed, fraction):
                voice, rate = voice_for(utt.utterance_id, seed)
                key = keys[c, i] = TranscriptCache.key(utt.text, voice, rate, transcriber_id)
                if key not in cache.items:
                    todo[key] = (utt.text, voice, rate)
    log.info("ASR: %d utterances chosen, %d to transcribe (%d cached)", len(keys), len(todo),
             len(keys) - len(todo))
    pending = list(todo.items())
    with tempfile.TemporaryDirectory() as tmp:
        for start in range(0, len(pending), batch_size):
            batch = pending[start:start + batch_size]
            audios = [speak(text, voice, rate, Path(tmp), PAD_S) for _, (text, voice, rate) in batch]
            for (key, _), heard in zip(batch, transcribe(audios), strict=True):
                cache.add(key, heard)
            if (start // batch_size) % 25 == 0:
                log.info("ASR: %d / %d transcribed", start + len(batch), len(pending))
    conversations = [
        Conversation(conv.conversation_id,
                     [replace(utt, text=cache.items[keys[c, i]]) if (c, i) in keys else utt
                      for i, utt in enumerate(conv.utterances)])
        for c, conv in enumerate(corpus.conversations)]
    return Corpus(corpus.name + name_suffix, corpus.labels, conversations)



EXCLAMATION_SEED = 1
"""Seed of the share written without exclamation marks (independent of :data:`ASR_SEED`'s)."""


def rewrite_texts(corpus: Corpus, rewrite: Callable[[str], str], name_suffix: str,
                  chosen: Callable[[str], bool] = lambda utterance_id: True) -> Corpus:
    """The corpus with ``rewrite`` applied to the non-empty texts of the ``chosen`` ids."""
    return Corpus(corpus.name + name_suffix, corpus.labels, [
        Conversation(conv.conversation_id, [
            replace(utt, text=rewrite(utt.text)) if utt.text and chosen(utt.utterance_id) else utt
            for utt in conv.utterances])
        for conv in corpus.conversations])


def exclamations_as_periods(text: str) -> str:
    """Every ``!`` written ``.``, as Whisper writes espeak-ng speech."""
    return text.replace("!", ".")


def without_exclamations(corpus: Corpus, fraction: float, seed: int = EXCLAMATION_SEED) -> Corpus:
    """The corpus with every ``!`` written ``.`` in a seeded ``fraction`` of its utterances.

    What ASR of a call writes, for the cue it loses most: Whisper writes 10 of MELD dev's
    349 exclamation marks as espeak-ng speaks them (and half its question marks), and the
    bundled model loses 12 of its 19 weighted-F1 points from gold to ASR text on that mark
    alone (``benchmarks/quality.py --asr-dev``, ``gold, ! as .``). Training on both
    spellings keeps the mark as a cue where a transcript has it and teaches the words where
    it has not, at no ASR cost. Chosen per utterance by a hash of its id (:func:`is_chosen`).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
    return rewrite_texts(corpus, exclamations_as_periods, "+no!",
                         lambda utterance_id: is_chosen(utterance_id, seed, fraction))


def streamer_transcriber() -> tuple[Transcribe, str]:
    """The streamer's Whisper with its default model and settings, and an id for caching.

    A segment the streamer would discard (``streamer.analyzer.heard_nothing``) gives an
    empty text. The device is the CPU wherever this runs, so one cache serves every machine.
    """
    from streamer.analyzer import heard_nothing
    from streamer.asr import Transcriber

    model, beam, window, max_no_speech = _streamer_defaults()
    transcriber = Transcriber(model, "cpu", beam, window_s=window)

    def transcribe(audios: Sequence[np.ndarray]) -> list[str]:
        return ["" if heard_nothing(t, max_no_speech) else t.text
                for t in transcriber.transcribe_batch(audios)]

    return transcribe, streamer_transcriber_id()


def _streamer_defaults() -> tuple[str, int, float, float]:
    from streamer.settings import StreamerSettings

    given = {k: f.default for k, f in StreamerSettings.model_fields.items()}
    return (given["whisper_model"], given["whisper_beam_size"], given["asr_window_s"],
            given["max_no_speech_prob"])


def streamer_transcriber_id() -> str:
    """Names the model and settings of :func:`streamer_transcriber` (part of the cache key)."""
    model, beam, window, max_no_speech = _streamer_defaults()
    return f"{model}|cpu|beam{beam}|window{window}|pad{PAD_S}|discard:nsp>{max_no_speech}&conf<1/e"


def heard_by_streamer(corpus: Corpus, cache_dir: Path, fraction: float = 1.0) -> Corpus:
    """:func:`asr_corpus` through :func:`streamer_transcriber`, seeded by :data:`ASR_SEED`."""
    transcribe, transcriber_id = streamer_transcriber()
    return asr_corpus(corpus, transcribe, transcriber_id, cache_dir, ASR_SEED, fraction)
