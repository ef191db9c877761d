"""Cross-validation by conversation (train/crossval.py) and class-prior correction (train/prior.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cberl_model.data import Conversation, Corpus, Utterance, load_corpus
from cberl_model.metrics import classification_report
from cberl_model.nn import CBERL, CBERLConfig
from cberl_model.runtime import ConfigError
from cberl_model.train.config import TrainConfig, parse_logit_bias
from cberl_model.train.crossval import (
    fold_assignment,
    fold_key,
    fold_split,
    pooled_corpus,
    run_fold,
)
from cberl_model.train.prior import (
    MemberLogits,
    bias_spec,
    bias_vector,
    fit_bias,
    fold_into_model,
    objective,
    probabilities,
)
from cberl_model.windows import WindowBatch, evaluation_windows
from tests.cberl_model.model_dirs import copy_model
from tests.cberl_model.test_augment import clustered_corpus, write_feature_corpus

pytestmark = pytest.mark.usefixtures("single_thread")
LABELS = ("neutral", "joy", "fear", "disgust")

ROOT = Path(__file__).resolve().parents[2]


def corpus_of(name: str, conversations: int) -> Corpus:
    return Corpus(name, LABELS, [
        Conversation(f"dia{c}", [Utterance(f"{c}-{i}", "A", f"text {i}", "neutral")
                                 for i in range(3)])
        for c in range(conversations)])


def test_pooled_corpus_prefixes_ids_so_splits_that_reuse_ids_do_not_collide():
    pooled = pooled_corpus("x", {"train": corpus_of("t", 5), "dev": corpus_of("d", 3)})
    ids = [c.conversation_id for c in pooled.conversations]
    assert len(ids) == len(set(ids)) == 8
    assert ids[0] == "train/dia0" and ids[-1] == "dev/dia2"


def test_folds_are_fixed_balanced_and_split_whole_conversations():
    pooled = pooled_corpus("x", {"train": corpus_of("t", 40), "dev": corpus_of("d", 7)})
    first, again = fold_assignment(pooled, 3), fold_assignment(pooled, 3)
    assert first == again and set(first.values()) == {0, 1, 2}
    sizes = np.bincount(list(first.values()))
    assert sizes.max() - sizes.min() <= 1
    seen: set[str] = set()
    for fold in range(3):
        fit, val, held = fold_split(pooled, first, fold, 0.1)
        f, v, h = ({c.conversation_id for c in x.conversations} for x in (fit, val, held))
        assert not (f & v or f & h or v & h)
        assert f | v | h == set(first) and len(v) == round(0.1 * (len(f) + len(v)))
        assert all(first[i] == fold for i in h)
        seen |= h
    assert seen == set(first)  # every conversation is held out exactly once


def test_fold_key_ignores_run_only_settings_and_the_post_hoc_bias():
    pooled = pooled_corpus("x", {"train": corpus_of("t", 6)})
    folds = fold_assignment(pooled, 3)
    base = TrainConfig()
    key = fold_key(base, pooled, folds, 0, 0.1)
    assert fold_key(base.updated({"run_dir": "elsewhere", "logit_bias": "joy=1"}), pooled,
                    folds, 0, 0.1) == key
    # settings added later leave the keys of results kept before them alone at their default
    assert fold_key(base.updated({"encoder_bf16": False, "asr_fraction": 0.0,
                                  "exclamation_fraction": 0.0}), pooled, folds, 0, 0.1) == key
    assert fold_key(base.updated({"exclamation_fraction": 0.5}), pooled, folds, 0, 0.1) != key
    assert fold_key(base.updated({"encoder_bf16": True}), pooled, folds, 0, 0.1) != key
    assert fold_key(base.updated({"lr": 1e-3}), pooled, folds, 0, 0.1) != key
    assert fold_key(base, pooled, folds, 1, 0.1) != key


def test_run_fold_scores_the_held_out_fold_with_member_logits(tmp_path):
    path = write_feature_corpus(tmp_path, "tiny", 0, 24)
    pooled = pooled_corpus("tiny", {"train": load_corpus(f"jsonl:{path}")})
    folds = fold_assignment(pooled, 3)
    config = TrainConfig(epochs=2, patience=1, latent_dim=16, lstm_hidden=8, gat_heads=2,
                         ensemble_members=3, progress=False, cache_dir=str(tmp_path / "cache"))
    summary, arrays = run_fold(config, pooled, folds, 1)
    n = len(arrays["y"])
    held = {i for i, f in folds.items() if f == 1}
    assert set(arrays["conversation"]) <= held
    assert arrays["final"].shape == arrays["revision0"].shape == (3, n, len(LABELS))
    assert "baseline" not in arrays  # pre-computed features: no encoder stage to score
    report = classification_report(arrays["y"], probabilities(arrays["final"]).argmax(1), LABELS)
    assert report == summary["held_out"]["final"]


def test_objective_is_the_mean_of_weighted_and_macro_f1():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    pred = np.where(rng.random(300) < 0.6, y, rng.integers(0, 4, 300))
    report = classification_report(y, pred, LABELS)
    assert objective(y, pred, LABELS) == pytest.approx(
        0.5 * (report["weighted_f1"] + report["macro_f1"]))


def test_fitted_bias_recovers_a_prior_shift_toward_the_majority_class():
    rng = np.random.default_rng(1)
    y = rng.choice(4, size=2000, p=[0.55, 0.25, 0.1, 0.1])
    logits = rng.normal(0, 1, (3, 2000, 4))
    logits[:, np.arange(2000), y] += 2.0
    logits[..., 0] += 1.5  # an over-confident majority class
    bias = fit_bias(logits, y, LABELS)
    assert bias[0] == 0.0  # the reference (most frequent) class stays put
    assert (bias[1:] > 0).all()
    before = objective(y, probabilities(logits).argmax(1), LABELS)
    assert objective(y, probabilities(logits, bias).argmax(1), LABELS) > before + 0.02


def test_bias_folded_into_the_model_equals_the_bias_on_member_logits():
    torch.manual_seed(0)
    model = CBERL(CBERLConfig(input_dims={"text": 16, "audio": 8}, num_classes=4, past=3,
                              future=1, latent_dim=16, fusion_hidden=16, lstm_hidden=8,
                              gat_heads=2, ensemble_members=3)).eval()
    convs = clustered_corpus(0, ("text", "audio"), conversations=4)
    batch = WindowBatch.collate(evaluation_windows(convs, 3, 1)[:20], 3, 1, 4.0)
    with MemberLogits(model) as captured:
        model.predict_proba(batch)
    bias = np.array([0.0, 0.7, 1.3, -0.4])
    expected = probabilities(captured.logits(), bias)
    fold_into_model(model, bias)
    np.testing.assert_allclose(model.predict_proba(batch).detach().numpy(), expected, atol=1e-5)


def test_logit_bias_settings_round_trip_and_refuse_bad_entries():
    spec = bias_spec(np.array([0.0, 0.5, 1.2, 0.0]), LABELS)
    assert spec == "joy=0.50,fear=1.20"
    parsed = parse_logit_bias(spec)
    np.testing.assert_allclose(bias_vector(parsed, LABELS), [0.0, 0.5, 1.2, 0.0])
    assert parse_logit_bias("") == {}
    with pytest.raises(ConfigError, match="label=number"):
        TrainConfig(logit_bias="fear")
    with pytest.raises(ConfigError, match="unknown label"):
        bias_vector({"anger": 1.0}, LABELS)


def test_a_bias_folded_into_a_model_directory_shifts_only_the_output_biases(tmp_path, meld_dir):
    import csv

    from cberl_model.artifact import load_artifact
    from cberl_model.evaluate import evaluate_artifact
    from cberl_model.train.prior import apply_to_artifact

    with open(meld_dir / "dev_sent_emo.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[:81]  # the header and 80 utterances: a quick re-score
    with open(tmp_path / "dev80.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    dev = f"meld:{tmp_path / 'dev80.csv'}"
    # a model without a recorded bias (the shipped one's card, any bias it has forgotten)
    plain = copy_model(Path("cberl_model/default_model").resolve(), tmp_path / "plain",
                       lambda card: card["training"]["config"].pop("logit_bias", None))
    new_id = apply_to_artifact(plain, "fear=0.5", tmp_path / "biased", dev)
    before, after = load_artifact(plain), load_artifact(tmp_path / "biased")
    assert new_id == after.model_id != before.model_id
    fear = before.labels.index("fear")
    for old, new in zip(before.model.classifier.members, after.model.classifier.members,
                        strict=True):
        shift = (new[-1].bias - old[-1].bias).detach().numpy()
        assert shift[fear] == pytest.approx(0.5) and np.delete(shift, fear) == pytest.approx(0)
    assert after.card["training"]["config"]["logit_bias"] == "fear=0.5"
    # the card describes the biased model: its dev metrics are re-scored, the old ones kept
    assert after.card["metrics"]["dev"] == evaluate_artifact(after, dev)
    assert after.card["metrics"]["before_logit_bias"] == before.card["metrics"]
    with pytest.raises(ConfigError, match="already carries logit_bias 'fear=0.5'"):
        apply_to_artifact(tmp_path / "biased", "joy=1", tmp_path / "twice")


@pytest.mark.parametrize(("args", "message"), [
    (["/nonexistent-model", "fear=1"], "error: model directory /nonexistent-model does not exist"),
    (["cberl_model/default_model", "fear=x"], "error: logit_bias entries must be label=number, got 'fear=x'"),
])
def test_prior_cli_user_errors_are_one_line_exit_2(args: list[str], message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "cberl_model.train.prior", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == message, result.stderr
    assert "Traceback" not in result.stderr
