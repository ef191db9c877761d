"""``python -m cberl_model.corpus build`` on a MELD-layout corpus made with real media."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from cberl_model.corpus.build import BuildConfig, build_corpus
from cberl_model.data import CorpusError, load_corpus
from cberl_model.data.cached import feature_file
from tests.cberl_model.media_corpus import TRAIN, clip_kind, make_clip, make_meld_layout

ROOT = Path(__file__).resolve().parents[2]
FEATURIZERS = {"audio": "opensmile-egemaps-v02", "visual": "mediapipe-face-mesh"}


def _build(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "cberl_model.corpus", "build", *args,
                           "--no-progress"], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=600)


@pytest.fixture(scope="module")
def meld_raw(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_meld_layout(tmp_path_factory.mktemp("meld_raw"))


@pytest.fixture(scope="module")
def built(meld_raw: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("built") / "train"
    done = _build(f"meld:{meld_raw[0]}", str(out), "--workers", "2")
    return out, done


def test_cli_builds_meld_layout_and_reports_bad_media(built) -> None:
    out, done = built
    assert done.returncode == 0, done.stderr[-3000:]
    assert "9 utterances: 7 featurized, 0 reused, 2 with unreadable media" in done.stdout
    assert "dia2_utt1" in done.stdout and "not a readable media file" in done.stdout
    assert "dia2_utt2" in done.stdout and "file not found" in done.stdout
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert sorted(e["utterance_id"] for e in errors) == ["dia2_utt1", "dia2_utt2"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert {m: s["extractor"] for m, s in manifest["featurizers"].items()} == FEATURIZERS


def test_cached_corpus_has_what_each_clip_shows(built) -> None:
    out, _ = built
    corpus = load_corpus(f"cached:{out}")
    assert corpus.num_utterances == 9 and corpus.labels[:2] == ("neutral", "joy")
    for utt in corpus.utterances():
        kind = clip_kind(utt.utterance_id, TRAIN)
        expected = {"face": {"audio", "visual"}, "grey": {"audio"}}.get(kind, set())
        assert set(utt.features) == expected, (utt.utterance_id, kind)
        assert utt.text  # broken media keep their text and label
    assert corpus.feature_sources["audio"]["dim"] == 88
    assert corpus.feature_sources["visual"]["dim"] == 369


def test_rerun_resumes_and_recomputes_identically(built, meld_raw) -> None:
    out, _ = built
    victim = feature_file(out, "dia0_utt0")
    before = load_file(str(victim))
    victim.unlink()
    with pytest.raises(CorpusError, match="unfinished: 1 utterance.*dia0_utt0.*resume"):
        load_corpus(f"cached:{out}")
    report = build_corpus(BuildConfig(f"meld:{meld_raw[0]}", out, FEATURIZERS, workers=1,
                                      progress=False))
    assert (report.total, report.computed, report.reused) == (9, 1, 6)
    assert len(report.failed) == 2  # broken media are retried, and fail again
    after = load_file(str(victim))
    for modality in before:
        np.testing.assert_array_equal(before[modality], after[modality])


def test_other_featurizers_into_the_same_directory_are_refused(built, meld_raw) -> None:
    out, _ = built
    done = _build(f"meld:{meld_raw[0]}", str(out), "--visual", "opencv-haar-hog")
    assert done.returncode == 2
    assert "was built with other featurizers" in done.stderr and "Traceback" not in done.stderr


def test_missing_clip_folder_is_a_clear_error(tmp_path: Path, meld_raw) -> None:
    lonely = tmp_path / "train_sent_emo.csv"
    lonely.write_text(meld_raw[0].read_text())
    done = _build(f"meld:{lonely}", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "no clip folder beside it (looked for: train_splits); pass --media-dir" in done.stderr
    # a text-only build needs no clips at all
    report = build_corpus(BuildConfig(f"meld:{lonely}", tmp_path / "text", {}, progress=False))
    assert (report.computed, report.failed) == (9, [])
    corpus = load_corpus(f"cached:{tmp_path / 'text'}")
    assert all(not u.features for u in corpus.utterances()) and corpus.feature_sources == {}


def test_jsonl_source_with_audio_files_and_text_only_lines(tmp_path: Path) -> None:
    make_clip(tmp_path / "a.mp4", "Hello, nice to meet you.", "face", tmp_path)
    lines = [{"labels": ["calm", "upset"]},
             {"conversation_id": "c1", "speaker": "agent", "text": "Hello", "label": "calm",
              "video": "a.mp4"},
             {"conversation_id": "c1", "speaker": "caller", "text": "Why?", "label": "upset",
              "audio": "_wav/a.wav"},
             {"conversation_id": "c1", "speaker": "agent", "text": "Sorry", "label": "calm"}]
    (tmp_path / "_wav").mkdir()
    (tmp_path / "a.wav").rename(tmp_path / "_wav" / "a.wav")
    (tmp_path / "calls.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    report = build_corpus(BuildConfig(f"jsonl:{tmp_path / 'calls.jsonl'}", tmp_path / "out",
                                      FEATURIZERS, workers=1, progress=False))
    assert (report.computed, report.failed) == (3, [])
    corpus = load_corpus(f"cached:{tmp_path / 'out'}")
    assert corpus.labels == ("calm", "upset")
    assert [set(u.features) for u in corpus.utterances()] == [{"audio", "visual"}, {"audio"}, set()]
