"""End to end: ``python -m cberl_model.train`` and ``python -m cberl_model.evaluate``.

A small real corpus (MELD dialogues written as the project's JSONL) goes through every
stage: LoRA adaptation with cross-fitting, cached features, CBERL training, the run
directory, the model artifact, and evaluation of that artifact from the command line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cberl_model.artifact import load_artifact
from cberl_model.data import Corpus
from cberl_model.data.jsonl import write_jsonl
from cberl_model.data.meld import read_meld_csv

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, cwd: Path, env_cache: Path) -> subprocess.CompletedProcess[str]:
    env = {"CBERL_CACHE_DIR": str(env_cache), "PATH": "/usr/bin:/bin", "HOME": str(cwd),
           "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def small_corpora(meld_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """40 training and 8 dev dialogues of MELD, as JSONL files."""
    folder = tmp_path_factory.mktemp("corpus")
    train, dev = read_meld_csv(meld_dir / "train_sent_emo.csv"), read_meld_csv(meld_dir / "dev_sent_emo.csv")
    paths = []
    for name, corpus, n in (("train", train, 40), ("dev", dev, 8)):
        path = folder / f"{name}.jsonl"
        write_jsonl(Corpus(name, corpus.labels, corpus.conversations[:n]), path)
        paths.append(path)
    return paths[0], paths[1]


@pytest.fixture(scope="module")
def trained(small_corpora: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("run")
    train, dev = small_corpora
    args = ("cberl_model.train", "--train", f"jsonl:{train}", "--dev", f"jsonl:{dev}",
            "--run-dir", "run", "--encoder-epochs", "1", "--encoder-lora-rank", "4",
            "--crossfit-folds", "2", "--epochs", "3", "--patience", "3", "--latent-dim", "64",
            "--lstm-hidden", "32", "--no-progress", "--seed", "1")
    first = _run(*args, cwd=work, env_cache=work / "cache")
    assert first.returncode == 0, first.stderr[-3000:]
    second = _run(*args, "--run-dir", "run2", cwd=work, env_cache=work / "cache")
    assert second.returncode == 0, second.stderr[-3000:]
    return work, first, second


def test_run_directory_has_every_artefact(trained):
    work, _, _ = trained
    run = work / "run"
    for name in ("config.json", "metrics.json", "per_class_report.txt", "confusion_matrix.png",
                 "training_curve.png", "model/config.json", "model/model.safetensors",
                 "model/encoder_adapter.safetensors", "model/labels.txt"):
        assert (run / name).is_file(), name
    assert json.loads((run / "config.json").read_text())["seed"] == 1
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("dev", "dev_revision0", "encoder_stage_dev", "history", "train_seconds",
                "peak_rss_mb"):
        assert key in metrics
    assert 0.0 <= metrics["dev"]["weighted_f1"] <= 1.0
    assert set(metrics["dev"]["per_class"]) == {"neutral", "joy", "surprise", "anger", "sadness",
                                                "disgust", "fear"}
    card = json.loads((run / "model/config.json").read_text())
    assert card["windows"] == {"past": 10, "future": 2}
    assert card["feature_spec"]["text"]["extractor"] == "text-encoder"
    assert len(card["training"]["train_data_hash"]) == 64
    # the artifact stores the adapter, never a copy of the encoder: it stays small
    size = sum(p.stat().st_size for p in (run / "model").iterdir())
    assert size < 20 * 2**20


def test_second_run_reuses_adapted_encoders_and_features(trained):
    _, first, second = trained
    assert "reusing adapted encoder" not in first.stderr
    assert second.stderr.count("reusing adapted encoder") == 3  # two folds + the full encoder
    assert "reusing cached text features" in second.stderr


def test_same_seed_gives_the_same_model(trained):
    work, _, _ = trained
    a = json.loads((work / "run/metrics.json").read_text())["dev"]
    b = json.loads((work / "run2/metrics.json").read_text())["dev"]
    assert a == b


def test_evaluate_cli_scores_the_trained_artifact(trained, small_corpora):
    work, _, _ = trained
    result = _run("cberl_model.evaluate", "--model", "run/model", "--data",
                  f"jsonl:{small_corpora[1]}", "--json", "scores.json", cwd=work,
                  env_cache=work / "cache")
    assert result.returncode == 0, result.stderr[-2000:]
    scores = json.loads((work / "scores.json").read_text())
    assert {"accuracy", "weighted_f1", "macro_f1", "per_class"} <= set(scores)
    for row in scores["per_class"].values():
        assert set(row) == {"precision", "recall", "f1", "support"}
        assert 0.0 <= row["f1"] <= 1.0
    assert sum(r["support"] for r in scores["per_class"].values()) == scores["num_utterances"]
    assert "weighted F1" in result.stdout
    # the CLI's numbers are the ones the trainer recorded for the same split
    recorded = json.loads((work / "run/metrics.json").read_text())["dev"]
    assert scores["weighted_f1"] == pytest.approx(recorded["weighted_f1"], abs=1e-9)
    assert load_artifact(work / "run/model").labels[0] == "neutral"


@pytest.mark.parametrize("args, message", [
    (("cberl_model.train", "--train", "meld:/nonexistent.csv", "--dev", "meld:/nonexistent.csv"),
     "file not found"),
    (("cberl_model.train", "--train", "csv:x", "--dev", "meld:y"), "unknown corpus format"),
    (("cberl_model.evaluate", "--model", "/nonexistent", "--data", "meld:x.csv"),
     "does not exist"),
])
def test_user_errors_exit_2_with_one_line_and_no_traceback(tmp_path, args, message):
    result = _run(*args, cwd=tmp_path, env_cache=tmp_path / "cache")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_config_key_is_refused(tmp_path):
    (tmp_path / "bad.toml").write_text("sede = 3\n")
    result = _run("cberl_model.train", "--config", "bad.toml", cwd=tmp_path,
                  env_cache=tmp_path / "cache")
    assert result.returncode == 2 and "unknown setting(s) sede" in result.stderr
