"""Reader of the feature corpora that ``python -m cberl_model.corpus build`` writes.

Layout of a built corpus directory::

    manifest.json        format version, source spec, label set, frame rate, and per
                         modality the featurizer spec entry (name, version, dim, options)
    corpus.jsonl         the conversations in the project's JSONL format (text, labels,
                         speakers, absolute media paths), without vectors
    features/<key>.safetensors
                         one file per finished utterance, a tensor per modality present
                         (no tensor for a modality that is absent: no face, no audio)
    errors.jsonl         utterances whose media could not be read in the last build, with
                         the reason; they keep their text and label, without media vectors

``<key>`` is :func:`utterance_key` of the utterance id (ids may hold any character). A
corpus whose build was interrupted is refused until the build is resumed and finishes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from cberl_model.data.conversation import Corpus, CorpusError
from cberl_model.data.jsonl import read_jsonl

MANIFEST = "manifest.json"
CORPUS = "corpus.jsonl"
FEATURES = "features"
ERRORS = "errors.jsonl"
CACHE_FORMAT = "cberl-feature-corpus"
CACHE_VERSION = 1


def utterance_key(utterance_id: str) -> str:
    """File-name-safe key of an utterance id (hex SHA-256 prefix)."""
    return hashlib.sha256(utterance_id.encode()).hexdigest()[:24]


def feature_file(root: Path, utterance_id: str) -> Path:
    """Where an utterance's vectors live inside a built corpus."""
    return root / FEATURES / f"{utterance_key(utterance_id)}.safetensors"


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of a built corpus.

    Raises:
        CorpusError: If it is missing, unreadable, or of another format or version.
    """
    path = root / MANIFEST
    if not path.is_file():
        raise CorpusError(str(root), f"not a built feature corpus: {MANIFEST} is missing "
                                     "(make one with `python -m cberl_model.corpus build`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorpusError(str(path), f"not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        raise CorpusError(str(path), f"not a {CACHE_FORMAT} manifest")
    if manifest.get("version") != CACHE_VERSION:
        raise CorpusError(str(path), f"version {manifest.get('version')}; this code reads "
                                     f"version {CACHE_VERSION}")
    return manifest


def failed_utterances(root: Path) -> dict[str, str]:
    """Utterance id -> reason, for the media the last build could not read."""
    path = root / ERRORS
    if not path.is_file():
        return {}
    failed = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            failed[record["utterance_id"]] = record["error"]
    return failed


def read_cached(path: str | Path) -> Corpus:
    """Load a built feature corpus with its vectors and their featurizer specs.

    Raises:
        CorpusError: If the directory is not a finished build, or a feature file is
            corrupt or has a modality the manifest does not list.
    """
    root = Path(path)
    manifest = read_manifest(root)
    corpus = read_jsonl(root / CORPUS)
    sources: dict[str, dict[str, Any]] = manifest.get("featurizers", {})
    failed = failed_utterances(root)
    missing = []
    for utt in corpus.utterances():
        file = feature_file(root, utt.utterance_id)
        if not file.is_file():
            if utt.utterance_id not in failed:
                missing.append(utt.utterance_id)
            continue
        try:
            vectors = load_file(str(file))
        except (SafetensorError, OSError) as exc:
            raise CorpusError(str(file), f"corrupt feature file: {exc}") from exc
        for modality, vector in vectors.items():
            if modality not in sources or vector.shape != (sources[modality]["dim"],):
                raise CorpusError(str(file), f"{modality} vector of shape {vector.shape} does not "
                                             f"match the manifest's featurizers")
            utt.features[modality] = vector.astype(np.float32)
    if missing:
        raise CorpusError(str(root), f"the build is unfinished: {len(missing)} utterance(s) have "
                                     f"no features yet (e.g. {missing[0]!r}); run the same "
                                     "build command again to resume it")
    return Corpus(name=f"cached:{root}", labels=corpus.labels, conversations=corpus.conversations,
                  feature_sources=sources)
