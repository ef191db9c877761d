"""Build a cached feature corpus from raw media and labels, resumably and in parallel.

Sources: MELD's raw release (``meld:DIR/train_sent_emo.csv`` with the clips
``dia{D}_utt{U}.mp4`` in ``train_splits/`` beside it; ``dev_splits_complete/`` and
``output_repeated_splits_test/`` for dev and test) and the project's JSONL format
(``jsonl:PATH``, media paths per line). Each utterance's media is decoded
(:mod:`cberl_model.corpus.media_files`) and run through the chosen audio and visual
featurizers; text is kept as text, because the trainer embeds it with the encoder it
adapts. The output layout is documented in :mod:`cberl_model.data.cached`.

Resumable: an utterance whose feature file exists is never recomputed, so an interrupted
build continues where it stopped; utterances whose media failed are retried. A changed
featurizer set for an existing output directory is refused (use another directory).
A missing or corrupt media file is reported (``errors.jsonl`` and the summary) and its
utterance keeps only its text; it never stops the build.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from safetensors.numpy import save_file

from cberl_model.corpus.media_files import MediaError, read_media
from cberl_model.data import Corpus, CorpusError, load_corpus
from cberl_model.data.cached import (
    CACHE_FORMAT,
    CACHE_VERSION,
    CORPUS,
    ERRORS,
    MANIFEST,
    feature_file,
    read_manifest,
)
from cberl_model.data.jsonl import write_jsonl
from cberl_model.features.media import FRAME_RATE, Featurizer, FeaturizerError
from cberl_model.features.registry import build_featurizer, check_featurizer, registration
from cberl_model.features.spec import FeatureSpec, ModalitySpec, spec_to_json
from cberl_model.progress import progress

log = logging.getLogger(__name__)

MELD_MEDIA_DIRS: dict[str, tuple[str, ...]] = {
    "train": ("train_splits",),
    "dev": ("dev_splits_complete", "dev_splits"),
    "test": ("output_repeated_splits_test", "test_splits"),
}
"""Clip folders of MELD's raw release, per split (the CSV name's prefix)."""


@dataclass(frozen=True)
class BuildConfig:
    """One build.

    Attributes:
        source: ``meld:CSV`` or ``jsonl:PATH``.
        out: Output directory (created; reused to resume).
        featurizers: Featurizer name per modality (``audio``, ``visual``); none for a
            text-only corpus.
        options: Options per featurizer name (e.g. ``{"whisper-encoder": {"model": ...}}``).
        media_dir: MELD clip folder, when it is not beside the CSV under its usual name.
        workers: Processes that decode and featurize (each holds its own featurizers).
        frame_rate: Video frames sampled per second.
        progress: Show a progress bar.
    """

    source: str
    out: Path
    featurizers: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    media_dir: Path | None = None
    workers: int = 2
    frame_rate: float = FRAME_RATE
    progress: bool = True


@dataclass
class BuildReport:
    """What a build did: utterance counts and the media that failed (id, reason)."""

    total: int
    computed: int
    reused: int
    failed: list[tuple[str, str]]


@dataclass(frozen=True)
class _Job:
    utterance_id: str
    audio_path: str | None
    video_path: str | None
    out_file: str


def load_source(source: str, media_dir: Path | None = None, with_media: bool = True) -> Corpus:
    """The labelled corpus with every utterance's media paths filled in.

    ``with_media=False`` (a text-only build) leaves MELD's clips alone.

    Raises:
        CorpusError: If the source cannot be read, is of another format, or MELD's clip
            folder cannot be found.
    """
    fmt = source.partition(":")[0].lower()
    if fmt not in ("meld", "jsonl"):
        raise CorpusError(source, "the corpus builder reads meld:CSV or jsonl:PATH sources")
    corpus = load_corpus(source)
    if fmt == "meld" and with_media:
        clips = media_dir or _meld_media_dir(Path(source.partition(":")[2]))
        for utt in corpus.utterances():
            utt.video_path = str((clips / f"{utt.utterance_id}.mp4").resolve())
    return corpus


def _meld_media_dir(csv: Path) -> Path:
    split = csv.name.split("_")[0]
    candidates = [csv.parent / name for name in MELD_MEDIA_DIRS.get(split, ())]
    for folder in candidates:
        if folder.is_dir():
            return folder
    names = ", ".join(c.name for c in candidates) or "none known for this file name"
    raise CorpusError(str(csv), f"no clip folder beside it (looked for: {names}); pass --media-dir")


def featurizer_specs(config: BuildConfig) -> tuple[dict[str, Featurizer], FeatureSpec]:
    """Build the chosen featurizers; return them with the spec entries they produce.

    Raises:
        FeaturizerError: On an unknown name, a featurizer of another modality, or options
            it does not take.
    """
    built: dict[str, Featurizer] = {}
    spec: FeatureSpec = {}
    for modality, name in config.featurizers.items():
        registration(name, modality)
        built[modality], spec[modality] = build_featurizer(name, config.options.get(name, {}),
                                                           device="cpu")
    return built, spec


def build_corpus(config: BuildConfig) -> BuildReport:
    """Featurize every utterance of ``config.source`` into ``config.out`` (resuming).

    Raises:
        CorpusError: If the source is unreadable, or ``out`` holds a build with other
            featurizers or labels.
        FeaturizerError: If a featurizer cannot be built.
    """
    corpus = load_source(config.source, config.media_dir, with_media=bool(config.featurizers))
    featurizers, spec = featurizer_specs(config)
    out = config.out
    manifest = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "source": config.source,
                "labels": list(corpus.labels), "frame_rate": config.frame_rate,
                "featurizers": spec_to_json(spec)}
    if (out / MANIFEST).is_file():
        previous = read_manifest(out)
        for key in ("labels", "frame_rate", "featurizers"):
            if previous.get(key) != manifest[key]:
                raise CorpusError(str(out), f"was built with other {key} ({previous.get(key)}); "
                                            "build into a new directory")
    (out / "features").mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    write_jsonl(corpus, out / CORPUS)

    utterances = list(corpus.utterances())
    jobs = [_Job(u.utterance_id, u.audio_path, u.video_path, str(feature_file(out, u.utterance_id)))
            for u in utterances if not feature_file(out, u.utterance_id).is_file()]
    log.info("%s: %d utterances, %d to featurize with %s", config.source, len(utterances),
             len(jobs), {m: s.extractor for m, s in spec.items()} or "no media featurizers")
    failed: list[tuple[str, str]] = []
    for utterance_id, error in progress(_run(jobs, featurizers, spec, config), "featurize media",
                                        total=len(jobs), unit="utt", enabled=config.progress,
                                        interval_s=60.0, logger=log):
        if error is not None:
            failed.append((utterance_id, error))
            log.warning("skipped the media of %s: %s", utterance_id, error)
    with (out / ERRORS).open("w", encoding="utf-8") as handle:
        for utterance_id, error in failed:
            handle.write(json.dumps({"utterance_id": utterance_id, "error": error}) + "\n")
    return BuildReport(total=len(utterances), computed=len(jobs) - len(failed),
                       reused=len(utterances) - len(jobs), failed=failed)


def _run(jobs: Sequence[_Job], featurizers: dict[str, Featurizer], spec: FeatureSpec,
         config: BuildConfig) -> Iterator[tuple[str, str | None]]:
    """Results in completion order; in this process when one worker (or no media) suffices."""
    workers = min(config.workers, len(jobs))
    if workers <= 1 or not featurizers:
        _WORKER.update(featurizers=featurizers, frame_rate=config.frame_rate)
        yield from map(_featurize, jobs)
        return
    # spawn, not fork: the parent already holds Whisper / MediaPipe runtimes and threads.
    context = multiprocessing.get_context("spawn")
    entries = list(spec.items())
    with context.Pool(workers, initializer=_init_worker,
                      initargs=(entries, config.frame_rate)) as pool:
        yield from pool.imap_unordered(_featurize, jobs, chunksize=2)


_WORKER: dict = {}
"""The featurizers of this process (set by :func:`_init_worker` or in-process)."""


def _init_worker(entries: list[tuple[str, ModalitySpec]], frame_rate: float) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    featurizers = {}
    for modality, spec in entries:
        featurizer, _ = build_featurizer(spec.extractor, spec.options, device="cpu")
        check_featurizer(modality, spec, featurizer)
        featurizers[modality] = featurizer
    _WORKER.update(featurizers=featurizers, frame_rate=frame_rate)


def _featurize(job: _Job) -> tuple[str, str | None]:
    """Decode and featurize one utterance; write its vectors atomically.

    Returns:
        The utterance id and ``None``, or the reason its media was skipped.
    """
    featurizers: dict[str, Featurizer] = _WORKER["featurizers"]
    try:
        media = read_media(None, job.audio_path, job.video_path, _WORKER["frame_rate"])
        vectors = {m: f.featurize([media])[0] for m, f in featurizers.items()}
    except (MediaError, FeaturizerError) as exc:
        return job.utterance_id, str(exc)
    except (RuntimeError, ValueError) as exc:  # a featurizer choking on odd but decodable media
        return job.utterance_id, f"featurizing failed: {type(exc).__name__}: {exc}"
    tmp = f"{job.out_file}.tmp{os.getpid()}"
    save_file({m: v for m, v in vectors.items() if v is not None}, tmp)
    os.replace(tmp, job.out_file)
    return job.utterance_id, None
