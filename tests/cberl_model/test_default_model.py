"""The model shipped in the repository: loads by default, is small, and scores on MELD dev."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cberl_model.artifact import DEFAULT_MODEL_DIR, load_artifact

ROOT = Path(__file__).resolve().parents[2]


def test_default_model_is_small_safe_and_describes_itself():
    files = {p.name: p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir()}
    assert set(files) == {"config.json", "labels.txt", "model.safetensors",
                          "encoder_adapter.safetensors"}
    assert sum(files.values()) < 20 * 2**20
    artifact = load_artifact()
    assert artifact.labels == ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")
    assert artifact.encoder is not None and artifact.encoder.lora is not None
    card = artifact.card
    assert card["windows"]["past"] >= 1 and card["windows"]["future"] >= 1
    assert card["training"]["train"].startswith("meld:")


def test_evaluate_without_model_uses_the_default_and_scores_meld_dev(meld_dir, tmp_path):
    out = tmp_path / "scores.json"
    result = subprocess.run(
        [sys.executable, "-m", "cberl_model.evaluate", "--data", f"meld:{meld_dir / 'dev_sent_emo.csv'}",
         "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    scores = json.loads(out.read_text())
    assert scores["num_utterances"] == 1109
    # the shipped model must stay clearly above the context-free logistic regression (~0.50)
    # and must not give up on the minority classes
    assert scores["weighted_f1"] > 0.57
    assert scores["per_class"]["fear"]["f1"] > 0.10
    assert scores["per_class"]["disgust"]["f1"] > 0.10
    recorded = load_artifact().card["metrics"]["dev"]
    assert abs(scores["weighted_f1"] - recorded["weighted_f1"]) < 1e-6
