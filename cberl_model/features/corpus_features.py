"""Turn a corpus into per-conversation feature matrices, caching the expensive part.

Pre-computed features a corpus carries (MERC pickles, JSONL ``features``) are used as they
are; text without pre-computed text features is embedded with the model's
:class:`~cberl_model.features.text_encoder.TextEncoder`. Encoded matrices are cached on disk
keyed by the encoder's feature id and the texts, so a second run does not re-encode.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from cberl_model.data import MODALITIES, Corpus, CorpusError
from cberl_model.features.spec import (  # noqa: F401  (re-exported: the spec's historic home)
    PRECOMPUTED,
    TEXT_ENCODER,
    FeatureSpec,
    ModalitySpec,
    spec_from_json,
    spec_to_json,
)
from cberl_model.features.text_encoder import TextEncoder, conversation_inputs
from cberl_model.windows import ConversationFeatures

log = logging.getLogger(__name__)


def corpus_inputs(corpus: Corpus, context_turns: int) -> tuple[list[str], list[str] | None]:
    """Every utterance's encoder input (texts, and past-turn contexts when asked), in order.

    Context comes from the utterance's own conversation, past turns only
    (:func:`~cberl_model.features.text_encoder.conversation_inputs`).
    """
    texts: list[str] = []
    contexts: list[str] | None = [] if context_turns > 0 else None
    for conv in corpus.conversations:
        t, c = conversation_inputs([u.speaker for u in conv], [u.text for u in conv],
                                   context_turns)
        texts += t
        if contexts is not None and c is not None:
            contexts += c
    return texts, contexts


def _text_matrix(texts: list[str], encoder: TextEncoder, cache_dir: Path | None,
                 progress: bool, contexts: list[str] | None = None) -> np.ndarray:
    digest = hashlib.sha256(encoder.feature_id().encode())
    if encoder.dtype != torch.float32:  # a serving encoder's rounding (TextEncoder.freeze)
        digest.update(str(encoder.dtype).encode())
    for text in texts:
        digest.update(text.encode() + b"\x1e")
    for context in contexts or ():
        digest.update(context.encode() + b"\x1f")
    path = cache_dir / "features" / f"{digest.hexdigest()[:24]}.safetensors" if cache_dir else None
    if path is not None and path.is_file():
        log.info("reusing cached text features %s", path)
        return load_file(str(path))["text"]
    device = next(encoder.parameters()).device
    matrix = encoder.to(device).encode(texts, progress=progress, contexts=contexts)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"text": matrix}, str(path))
    return matrix


def _source_spec(corpus: Corpus, modality: str, dim: int) -> ModalitySpec:
    source = corpus.feature_sources.get(modality)
    if source is None:
        return ModalitySpec(PRECOMPUTED, f"{PRECOMPUTED}-{dim}", dim)
    return ModalitySpec(source["extractor"], source["feature_id"], dim, dict(source.get("options", {})))


def corpus_spec(corpus: Corpus, encoder: TextEncoder | None) -> FeatureSpec:
    """The feature spec this corpus yields: its vectors' modalities, plus encoded text.

    Vectors a built corpus carries keep the featurizer spec its manifest records (so the
    model can rebuild that featurizer when serving); vectors of unknown origin are
    ``precomputed``.
    """
    spec = {m: _source_spec(corpus, m, d) for m, d in corpus.feature_dims().items()}
    unknown = set(spec) - set(MODALITIES)
    if unknown:
        raise CorpusError(corpus.name, f"unknown modality {sorted(unknown)}; known: {MODALITIES}")
    has_text = any(u.text for u in corpus.utterances())
    if "text" not in spec and has_text and encoder is not None:
        spec["text"] = ModalitySpec(TEXT_ENCODER, encoder.feature_id(), encoder.dim)
    if not spec:
        raise CorpusError(corpus.name, "has neither text nor pre-computed features")
    return {m: spec[m] for m in MODALITIES if m in spec}


def featurize_corpus(corpus: Corpus, spec: FeatureSpec, encoder: TextEncoder | None,
                     cache_dir: Path | None = None, progress: bool = False,
                     labels: tuple[str, ...] | None = None) -> list[ConversationFeatures]:
    """Feature matrices of every conversation, following ``spec`` (usually the model's).

    A modality of ``spec`` that the corpus lacks becomes absent (zero rows, presence
    ``False``); the DJVAE fusion handles that. A pre-computed modality whose dimension
    differs from ``spec`` is an error. ``labels`` is the model's label set (class indices
    follow it); it defaults to the corpus's own.

    Raises:
        CorpusError: On a dimension mismatch, or when text must be encoded but there is no
            encoder.
    """
    labels = labels or corpus.labels
    foreign = [label for label in corpus.labels if label not in labels]
    if foreign:
        raise CorpusError(corpus.name, f"labels {foreign} are not in the model's label set "
                                       f"{list(labels)}")
    index = {label: i for i, label in enumerate(labels)}
    available = corpus.feature_dims()
    for m, s in spec.items():
        if m in available and available[m] != s.dim:
            raise CorpusError(corpus.name, f"{m} features have dimension {available[m]}, "
                                           f"the model expects {s.dim}")
        if m in available and s.extractor != PRECOMPUTED:
            source = _source_spec(corpus, m, available[m])
            if (source.extractor, source.feature_id) != (s.extractor, s.feature_id):
                raise CorpusError(corpus.name, f"{m} features come from {source.extractor!r} "
                                               f"version {source.feature_id!r}, the model uses "
                                               f"{s.extractor!r} version {s.feature_id!r}")
    text_rows: np.ndarray | None = None
    if "text" in spec and spec["text"].extractor == TEXT_ENCODER and "text" not in available:
        if encoder is None:
            raise CorpusError(corpus.name, "text must be encoded but no text encoder was given")
        texts, contexts = corpus_inputs(corpus, encoder.context_turns)
        with torch.inference_mode():
            text_rows = _text_matrix(texts, encoder, cache_dir, progress, contexts)
    out = []
    row = 0
    for conv in corpus.conversations:
        n = len(conv)
        feats: dict[str, np.ndarray] = {}
        present: dict[str, np.ndarray] = {}
        for m, s in spec.items():
            if text_rows is not None and m == "text":
                feats[m] = text_rows[row:row + n]
                present[m] = np.array([bool(u.text) for u in conv], dtype=bool)
                continue
            matrix = np.zeros((n, s.dim), dtype=np.float32)
            mask = np.zeros(n, dtype=bool)
            for i, utt in enumerate(conv):
                if m in utt.features:
                    matrix[i], mask[i] = utt.features[m], True
            feats[m], present[m] = matrix, mask
        out.append(ConversationFeatures(
            conversation_id=conv.conversation_id,
            utterance_ids=[u.utterance_id for u in conv],
            speakers=[u.speaker for u in conv],
            features=feats, present=present,
            labels=np.array([index[u.label] if u.label else -1 for u in conv], dtype=np.int64)))
        row += n
    return out
