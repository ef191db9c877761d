"""What ASR actually hears: corpus texts spoken by espeak-ng and transcribed by Whisper.

A model trained on clean transcripts meets Whisper's output on a live call (lower case,
dropped fillers, misheard words). :func:`asr_corpus` turns a corpus into the same
conversations with each utterance's text replaced by its ASR transcript: the text is spoken
by espeak-ng in one of :data:`VOICES` (chosen per utterance, seeded, so a corpus hears
several voices) and transcribed by the ``transcribe`` callable the caller passes (the
streamer's :class:`streamer.asr.Transcriber` with its settings, so evaluation hears what a
call would; this package does not import the streamer). Transcripts are cached per
``(text, voice, transcriber id)`` in ``cache_dir/asr/``, one JSON line each, so a second run
and a resumed one transcribe nothing twice. Costs about 0.2-0.5 s CPU per utterance.

Needs the ``espeak-ng`` and ``sox`` programs (``deploy/system-packages.sh``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from cberl_model.data import Conversation, Corpus

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
VOICES: tuple[tuple[str, int], ...] = (("en-us", 150), ("en-gb", 165), ("en-029", 140),
                                       ("en-gb-scotland", 155))
"""espeak-ng (voice, words per minute) pairs an utterance may be spoken with."""

Transcribe = Callable[[Sequence[np.ndarray]], list[str]]
"""A batch of 16 kHz mono float32 segments -> their transcripts."""


PAD_S = 0.1
"""Silence kept on each side, as the streamer's endpointer pads a segment (speech_pad_ms)."""


def speak(text: str, voice: str, rate_wpm: int, workdir: Path) -> np.ndarray:
    """``text`` spoken by espeak-ng, 16 kHz mono float32, silence trimmed to :data:`PAD_S`."""
    raw, out = workdir / "espeak.wav", workdir / "espeak16.raw"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate_wpm), "-w", str(raw), text],
                   check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", "-e",
                    "signed", "-t", "raw", str(out)], check=True, capture_output=True)
    audio = np.fromfile(out, np.int16).astype(np.float32) / 32768
    loud = np.nonzero(np.abs(audio) > 0.01)[0]
    if not loud.size:
        return audio
    pad = int(PAD_S * SAMPLE_RATE)
    return audio[max(0, loud[0] - pad):loud[-1] + 1 + pad]


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


def voice_for(utterance_id: str, seed: int) -> tuple[str, int]:
    """The voice one utterance is spoken with: a seeded hash of its id."""
    digest = hashlib.sha256(f"{seed}/{utterance_id}".encode()).digest()
    return VOICES[digest[0] % len(VOICES)]


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
    rng = np.random.default_rng(seed)
    chosen = {u.utterance_id for u in corpus.utterances()
              if u.text and u.text.strip() and rng.random() < fraction}
    todo: list[tuple[str, str, str, int]] = []
    for utt in corpus.utterances():
        if utt.utterance_id in chosen:
            voice, rate = voice_for(utt.utterance_id, seed)
            key = TranscriptCache.key(utt.text or "", voice, rate, transcriber_id)
            if key not in cache.items:
                todo.append((key, utt.text or "", voice, rate))
    todo = list({t[0]: t for t in todo}.values())
    log.info("ASR: %d utterances chosen, %d to transcribe (%d cached)", len(chosen), len(todo),
             len(chosen) - len(todo))
    with tempfile.TemporaryDirectory() as tmp:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            audios = [speak(text, voice, rate, Path(tmp)) for _, text, voice, rate in batch]
            for (key, *_), heard in zip(batch, transcribe(audios), strict=True):
                cache.add(key, heard)
            if (start // batch_size) % 25 == 0:
                log.info("ASR: %d / %d transcribed", start + len(batch), len(todo))
    conversations = []
    for conv in corpus.conversations:
        utterances = []
        for utt in conv.utterances:
            if utt.utterance_id in chosen:
                voice, rate = voice_for(utt.utterance_id, seed)
                heard = cache.items[TranscriptCache.key(utt.text or "", voice, rate,
                                                        transcriber_id)]
                utt = replace(utt, text=heard)
            utterances.append(utt)
        conversations.append(Conversation(conv.conversation_id, utterances))
    return Corpus(corpus.name + name_suffix, corpus.labels, conversations)
