"""K-fold cross-validation by conversation over train+dev: selection that generalizes.

MELD dev has 40 fear and 22 disgust utterances, so a recipe chosen on dev picks noise.
Here train and dev are pooled (conversation ids prefixed ``train/`` and ``dev/``), split
into ``k`` folds of whole conversations by a fixed seed (:func:`fold_assignment`, recorded
beside the report), and each fold is scored by a model trained on the others:

* fit set: the other folds minus an inner validation set (``inner_fraction`` of their
  conversations, seeded), which picks the encoder epoch and stops the CBERL training,
  exactly as dev does in a normal run - the held-out fold is never looked at;
* held-out fold: scored by the per-utterance stage-1 model (the fine-tuned encoder and its
  linear head, no context: the baseline), and by CBERL with revision-0 (no look-ahead)
  and final (``future``) windows.

:func:`run_fold` returns the members' raw logits with the labels, so post-hoc class-prior
correction (:mod:`cberl_model.train.prior`) can be fitted out of fold afterwards without
retraining anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cberl_model.data import Conversation, Corpus
from cberl_model.encoder_finetune import head_logits
from cberl_model.features.corpus_features import featurize_corpus
from cberl_model.metrics import classification_report
from cberl_model.predict import predict_windows
from cberl_model.runtime import default_cache_dir
from cberl_model.train.config import TrainConfig
from cberl_model.train.pipeline import fit_model
from cberl_model.train.prior import MemberLogits, probabilities
from cberl_model.windows import evaluation_windows

log = logging.getLogger(__name__)

RUN_ONLY = ("seed", "train", "dev", "run_dir", "model_dir", "device", "cache_dir", "progress",
            "logit_bias")
"""Settings that do not change what a fold's raw logits are (``seed`` is keyed separately;
``logit_bias`` is applied after the fold, out of fold)."""


NEUTRAL: dict[str, Any] = {"asr_fraction": 0.0, "exclamation_fraction": 0.0,
                           "encoder_bf16": False}
"""Settings added after fold results were first kept, keyed only when set: at these values
they change nothing, and the results kept before them keep their names."""


def pooled_corpus(name: str, parts: dict[str, Corpus]) -> Corpus:
    """One corpus of every conversation of ``parts``, ids prefixed by the part's name."""
    labels = next(iter(parts.values())).labels
    conversations = []
    for part, corpus in parts.items():
        if corpus.labels != labels:
            raise ValueError(f"{part} has labels {corpus.labels}, expected {labels}.")
        conversations += [Conversation(f"{part}/{c.conversation_id}", c.utterances)
                          for c in corpus.conversations]
    return Corpus(name, labels, conversations)


def fold_assignment(corpus: Corpus, folds: int, seed: int = 0) -> dict[str, int]:
    """Conversation id -> fold in ``0..folds-1``: a seeded permutation dealt round-robin."""
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}.")
    ids = sorted(c.conversation_id for c in corpus.conversations)
    order = np.random.default_rng(seed).permutation(len(ids))
    return {ids[i]: int(rank % folds) for rank, i in enumerate(order)}


def assignment_hash(assignment: dict[str, int]) -> str:
    """Identifies a fold assignment (part of every fold result's key)."""
    return hashlib.sha256(json.dumps(sorted(assignment.items())).encode()).hexdigest()[:12]


def _subset(corpus: Corpus, name: str, ids: set[str]) -> Corpus:
    return Corpus(name, corpus.labels, [c for c in corpus.conversations if c.conversation_id in ids])


def fold_split(corpus: Corpus, assignment: dict[str, int], fold: int,
               inner_fraction: float = 0.1, seed: int = 0) -> tuple[Corpus, Corpus, Corpus]:
    """(fit, inner validation, held-out) corpora of one fold."""
    held = {i for i, f in assignment.items() if f == fold}
    rest = sorted(i for i, f in assignment.items() if f != fold)
    rng = np.random.default_rng([seed, fold])
    inner = set(rng.choice(rest, size=max(1, round(inner_fraction * len(rest))), replace=False))
    fit = set(rest) - inner
    return (_subset(corpus, f"{corpus.name}#fit{fold}", fit),
            _subset(corpus, f"{corpus.name}#val{fold}", inner),
            _subset(corpus, f"{corpus.name}#fold{fold}", held))


def fold_key(config: TrainConfig, corpus: Corpus, assignment: dict[str, int], fold: int,
             inner_fraction: float) -> str:
    """A fold result's name: everything that determines it, hashed."""
    settings = {k: v for k, v in config.to_dict().items()
                if k not in RUN_ONLY and (k not in NEUTRAL or v != NEUTRAL[k])}
    payload = {"settings": settings, "seed": config.seed, "corpus": corpus.content_hash(),
               "folds": assignment_hash(assignment), "fold": fold, "inner": inner_fraction}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def run_fold(config: TrainConfig, corpus: Corpus, assignment: dict[str, int], fold: int,
             inner_fraction: float = 0.1) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Train on the other folds and score the held-out one.

    Returns:
        ``(summary, arrays)``: reports of the baseline, CBERL revision 0 and final on the
        held-out fold (and on the inner validation set) and timings; arrays ``y`` (labels
        of the held-out labelled utterances), ``conversation`` (their conversation ids),
        ``baseline`` (``(N, C)`` stage-1 logits), ``final`` and ``revision0`` (``(K, N, C)``
        ensemble member logits).
    """
    started = time.perf_counter()
    config = replace(config, logit_bias="")  # raw logits; prior correction is fitted later
    fit, val, held = fold_split(corpus, assignment, fold, inner_fraction)
    log.info("fold %d: fit %d conversations (%d utterances), inner val %d, held-out %d (%d)",
             fold, len(fit.conversations), fit.num_utterances, len(val.conversations),
             len(held.conversations), held.num_utterances)
    fitted = fit_model(config, fit, val)
    cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    fitted.model.eval()
    held_feats = featurize_corpus(held, fitted.spec, fitted.encoder, cache_dir, False,
                                  fitted.labels)
    arrays: dict[str, np.ndarray] = {}
    for name, future in (("final", config.future), ("revision0", 0)):
        windows = [w for w in evaluation_windows(held_feats, config.past, future)
                   if w.conversation.labels[w.target] >= 0]
        with MemberLogits(fitted.model) as captured:
            predict_windows(fitted.model, windows, fitted.device)
        arrays[name] = captured.logits()
        if name == "final":
            arrays["y"] = np.array([int(w.conversation.labels[w.target]) for w in windows])
            arrays["conversation"] = np.array([w.conversation.conversation_id for w in windows])
            keys = [(w.conversation.conversation_id, w.target) for w in windows]
    # The per-utterance baseline on the same utterances, in the same order.
    if fitted.encoder is not None and fitted.encoder_stage and fitted.encoder_stage.get("head"):
        text = np.concatenate([f.features["text"] for f in held_feats])
        rows = head_logits(fitted.encoder_stage["head"], text)
        where = {}
        row = 0
        for conv in held.conversations:
            for i in range(len(conv)):
                where[(conv.conversation_id, i)] = row
                row += 1
        arrays["baseline"] = rows[[where[k] for k in keys]]
    labels = fitted.labels
    y = arrays["y"]

    def report(logits: np.ndarray) -> dict[str, Any]:
        return classification_report(y, probabilities(logits).argmax(1), labels)

    summary = {
        "fold": fold, "labels": list(labels),
        "held_out": {k: report(arrays[k]) for k in ("baseline", "revision0", "final")
                     if k in arrays},
        "inner_val": {"cberl": [h for h in fitted.history if h["epoch"] == fitted.best_epoch],
                      "encoder_stage": (fitted.encoder_stage or {}).get("dev")},
        "best_epoch": fitted.best_epoch,
        "encoder_seconds": (fitted.encoder_stage or {}).get("seconds"),
        "seconds": time.perf_counter() - started,
        "sizes": {"fit": fit.num_utterances, "inner_val": val.num_utterances,
                  "held_out": held.num_utterances},
    }
    return summary, arrays
