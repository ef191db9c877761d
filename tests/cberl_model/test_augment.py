"""Tests of the imbalance stage: placement policy, oversampling, SMOTE, the multimodal GAN.

The GAN is trained on small synthetic corpora whose classes are overlapping Gaussian
clusters (an independent logistic regression recognises about 75% of the real samples
of the minority classes with text only), so "labelled as intended" and "not a copy" are
measured, not assumed. Thresholds were set from measured values with a wide margin:
intended rate 0.99 measured (asserted >= 0.8, chance 0.25); median nearest-neighbour
distance to the training set about 1.0x the real within-class median (asserted >= 0.6x);
smallest such distance about 0.6x (asserted >= 0.2x; a copy gives 0).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cberl_model.augment import (
    GANConfig,
    MultimodalGANAugmenter,
    class_deficits,
    gan_augment,
    oversample_augment,
    smote_augment,
    smote_samples,
)
from cberl_model.augment.diagnostics import diagnose
from cberl_model.augment.gan_networks import MultimodalGAN
from cberl_model.data import Conversation, Corpus, Utterance
from cberl_model.data.jsonl import read_jsonl, write_jsonl
from cberl_model.train import augment as registry
from cberl_model.train.augment import AugmentSettings, get_augmentation
from cberl_model.train.config import TrainConfig
from cberl_model.train.pipeline import run_training
from cberl_model.windows import ConversationFeatures, training_windows

pytestmark = pytest.mark.usefixtures("single_thread")

DIMS = {"text": 16, "audio": 8, "visual": 6}
MODALITY_SETS = [("text",), ("text", "audio"), ("text", "audio", "visual")]
CLASS_SHARES = np.array([0.55, 0.3, 0.09, 0.06])  # two majority, two minority classes
NUM_CLASSES = len(CLASS_SHARES)


def clustered_corpus(seed: int, modalities: tuple[str, ...], conversations: int = 60,
                     present_rate: float = 1.0) -> list[ConversationFeatures]:
    """Conversations whose utterance features are noisy class centres (overlapping clusters)."""
    rng = np.random.default_rng(seed)
    centres = {m: np.random.default_rng(100 + i).normal(0, 0.5, (NUM_CLASSES, DIMS[m]))
               for i, m in enumerate(modalities)}
    out = []
    for c in range(conversations):
        length = int(rng.integers(4, 14))
        labels = rng.choice(NUM_CLASSES, size=length, p=CLASS_SHARES).astype(np.int64)
        labels[rng.random(length) < 0.05] = -1  # a few unlabelled utterances, as in real data
        features, present = {}, {}
        for m in modalities:
            mask = np.ones(length, bool) if m == "text" else rng.random(length) < present_rate
            x = (centres[m][np.maximum(labels, 0)] + rng.normal(0, 1, (length, DIMS[m])))
            x[~mask] = 0.0
            features[m], present[m] = x.astype(np.float32), mask
        out.append(ConversationFeatures(
            f"c{c}", [f"c{c}u{i}" for i in range(length)],
            [f"s{int(s)}" for s in rng.integers(3, size=length)], features, present, labels))
    return out


def labelled_counts(conversations: list[ConversationFeatures]) -> np.ndarray:
    return np.bincount(np.concatenate([c.labels[c.labels >= 0] for c in conversations]),
                       minlength=NUM_CLASSES)


def flat(conversations: list[ConversationFeatures], modalities: tuple[str, ...]
         ) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated features and labels of every labelled utterance."""
    rows = [(np.concatenate([c.features[m][i] for m in modalities]), c.labels[i])
            for c in conversations for i in np.flatnonzero(c.labels >= 0)]
    return np.stack([r[0] for r in rows]), np.array([r[1] for r in rows])


FAST_GAN = GANConfig(epochs=40, batch_size=64, hidden_dim=64)


# --------------------------------------------------------------------------- placement


def test_class_deficits_top_up_to_ratio_of_largest_class():
    labels = np.array([0] * 10 + [1] * 5 + [2])
    assert class_deficits(labels, 4, 0.5).tolist() == [0, 0, 4, 0]  # class 3 has no example
    assert class_deficits(labels, 4, 1.0).tolist() == [0, 5, 9, 0]
    with pytest.raises(ValueError, match="ratio must be in"):
        class_deficits(labels, 4, 0.0)


METHODS = {
    "oversample": lambda convs, rng: oversample_augment(convs, NUM_CLASSES, 0.5, rng),
    "smote": lambda convs, rng: smote_augment(convs, NUM_CLASSES, 0.5, rng),
    "gan": lambda convs, rng: gan_augment(convs, NUM_CLASSES, 0.5, rng, GANConfig(epochs=2)),
}


@pytest.mark.parametrize("method", list(METHODS))
def test_synthetic_utterances_live_in_copies_of_real_conversations(method: str):
    convs = clustered_corpus(0, ("text", "audio"), present_rate=0.7)
    snapshot = [(c.labels.copy(), {m: x.copy() for m, x in c.features.items()}) for c in convs]
    out = METHODS[method](convs, np.random.default_rng(1))
    # Originals come first and are untouched.
    assert out[:len(convs)] == convs
    for c, (labels, features) in zip(convs, snapshot, strict=True):
        assert np.array_equal(c.labels, labels)
        assert all(np.array_equal(c.features[m], features[m]) for m in features)
    # Every class now has at least ratio * largest count labelled utterances.
    before, after = labelled_counts(convs), labelled_counts(out)
    assert (after >= np.ceil(0.5 * before.max())).all()
    assert after[:2].tolist() == before[:2].tolist()  # majority classes get nothing
    by_id = {c.conversation_id: c for c in convs}
    copies = out[len(convs):]
    assert len(copies) == int((after - before).sum())
    for copy in copies:
        original = by_id[copy.conversation_id.split("#")[0]]
        # Same structure: speakers, length, order, presence -> same speaker graph.
        assert copy.speakers == original.speakers and copy.utterance_ids == original.utterance_ids
        assert all(np.array_equal(copy.present[m], original.present[m]) for m in original.present)
        # Exactly one labelled node: the host, labelled with its own (minority) class.
        (host,) = np.flatnonzero(copy.labels >= 0)
        assert copy.labels[host] == original.labels[host] >= 2
        for m, x in copy.features.items():
            others = np.arange(len(copy)) != host
            assert np.array_equal(x[others], original.features[m][others])
            if not copy.present[m][host]:
                assert not x[host].any()  # an absent modality stays absent
    # One training window per synthetic utterance, on the host.
    windows = training_windows(copies, 3, 1, 0.5, np.random.default_rng(0))
    assert len(windows) == len(copies)


def test_oversampling_repeats_real_features():
    convs = clustered_corpus(1, ("text",))
    for copy in oversample_augment(convs, NUM_CLASSES, 0.5, np.random.default_rng(0))[len(convs):]:
        original = next(c for c in convs if c.conversation_id == copy.conversation_id.split("#")[0])
        assert np.array_equal(copy.features["text"], original.features["text"])


def test_smote_interpolates_between_same_class_neighbours():
    features = {"a": np.array([[0.0, 0.0], [2.0, 2.0], [9.0, -9.0]], np.float32)}
    labels = np.array([1, 1, 0])
    out = smote_samples(features, labels, np.zeros(50, dtype=np.int64), 5, np.random.default_rng(0))["a"]
    # On the segment from the seed (0, 0) to its only same-class neighbour (2, 2); never
    # towards the other class's point.
    assert np.allclose(out[:, 0], out[:, 1])
    assert (out[:, 0] >= 0).all() and (out[:, 0] <= 2).all()
    assert len(np.unique(out[:, 0])) > 40  # random positions, not copies


# --------------------------------------------------------------------------- the GAN


@pytest.mark.parametrize("modalities", MODALITY_SETS)
def test_gan_samples_carry_their_label_and_are_not_copies(modalities: tuple[str, ...]):
    convs = clustered_corpus(2, modalities)
    real, real_labels = flat(convs, modalities)
    split = np.cumsum([DIMS[m] for m in modalities])[:-1]
    features = dict(zip(modalities, np.split(real, split, axis=1), strict=True))
    augmenter = MultimodalGANAugmenter(features, real_labels, NUM_CLASSES, FAST_GAN, seed=0)
    assert all(np.isfinite(list(h.values())).all() for h in augmenter.history)
    rng = np.random.default_rng(3)
    targets = np.repeat([2, 3], 100)  # the minority classes
    sources = rng.choice(np.flatnonzero(real_labels < 2), size=len(targets))  # from majority
    generated = augmenter.generate({m: x[sources] for m, x in features.items()}, targets, rng)
    assert {m: x.shape for m, x in generated.items()} == {m: (200, DIMS[m]) for m in modalities}
    report = diagnose(real, real_labels, np.concatenate([generated[m] for m in modalities], 1),
                      targets)
    # (a) an independent classifier (logistic regression on real data) agrees with the label.
    assert report.intended_rate >= 0.8, report
    # (b) not copies of training samples: as far from them as real samples are from each other.
    assert report.min_nn_distance >= 0.2 * report.median_real_nn_distance, report
    assert report.median_nn_distance >= 0.6 * report.median_real_nn_distance, report
    # Different noise, different samples (no mode collapse onto one point per class).
    again = augmenter.generate({m: x[sources] for m, x in features.items()}, targets, rng)
    assert not np.allclose(again[modalities[0]], generated[modalities[0]])


def test_diagnostics_flag_copies():
    convs = clustered_corpus(3, ("text",))
    real, labels = flat(convs, ("text",))
    minority = np.flatnonzero(labels >= 2)
    report = diagnose(real, labels, real[minority], labels[minority])
    assert report.min_nn_distance == 0.0 and report.median_nn_distance == 0.0


def test_gan_networks_shapes_and_repr():
    gan = MultimodalGAN({"text": 5, "audio": 3}, num_classes=4, noise_dim=2, hidden_dim=8)
    import torch

    x = {"text": torch.randn(6, 5), "audio": torch.randn(6, 3)}
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    fake = gan.translate(x, y, torch.randn(6, 2))
    assert {m: tuple(v.shape) for m, v in fake.items()} == {"text": (6, 5), "audio": (6, 3)}
    assert {m: tuple(v.shape) for m, v in gan.back_translate(fake, y).items()} == {
        "text": (6, 5), "audio": (6, 3)}
    assert gan.joint_discriminator(gan.joint(fake), y).shape == (6,)
    assert repr(gan) == "MultimodalGAN({'text': 5, 'audio': 3}, num_classes=4)"
    with pytest.raises(ValueError, match="at least one modality"):
        MultimodalGAN({}, 4)


def test_gan_needs_complete_utterances():
    convs = clustered_corpus(4, ("text", "audio"), conversations=3, present_rate=0.0)
    for c in convs:
        c.present["text"][:] = False
    with pytest.raises(ValueError, match="every modality"):
        gan_augment(convs, NUM_CLASSES, 0.5, np.random.default_rng(0), GANConfig(epochs=1))


# --------------------------------------------------------------------------- the trainer


def test_registry_names_and_unknown_name():
    assert set(registry.AUGMENTATIONS) == {"none", "oversample", "smote", "gan", "classweight"}
    assert get_augmentation("classweight").class_weight_power == 1.0
    assert get_augmentation("gan").class_weight_power is None
    with pytest.raises(ValueError, match="unknown augmentation 'mixup'"):
        get_augmentation("mixup")


def write_feature_corpus(folder: Path, name: str, seed: int, conversations: int) -> Path:
    """A JSONL corpus carrying pre-computed text+audio features (no encoder needed)."""
    labels = ("neutral", "joy", "fear", "disgust")
    corpus = Corpus("tiny", labels, [
        Conversation(f"{name}-{c.conversation_id}", [
            Utterance(uid, speaker, label=labels[int(y)] if y >= 0 else None,
                      features={m: c.features[m][i] for m in c.features if c.present[m][i]})
            for i, (uid, speaker, y) in enumerate(zip(c.utterance_ids, c.speakers, c.labels,
                                                      strict=True))])
        for c in clustered_corpus(seed, ("text", "audio"), conversations)])
    path = folder / f"{name}.jsonl"
    write_jsonl(corpus, path)
    return path


@pytest.fixture(scope="module")
def tiny_corpora(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tiny")
    return write_feature_corpus(folder, "train", 10, 40), write_feature_corpus(folder, "dev", 11, 10)


def tiny_config(train: Path, dev: Path, run_dir: Path, **values: object) -> TrainConfig:
    """A seconds-long run: tiny network, two epochs, two GAN epochs."""
    return TrainConfig().updated({
        "train": f"jsonl:{train}", "dev": f"jsonl:{dev}", "run_dir": str(run_dir),
        "cache_dir": str(run_dir / "cache"), "epochs": 2, "latent_dim": 16, "lstm_hidden": 8,
        "gat_heads": 2, "progress": False, "gan_epochs": 2, **values})


@pytest.mark.parametrize("augment", ["none", "oversample", "smote", "gan", "classweight"])
def test_only_training_conversations_are_augmented(augment: str, tiny_corpora, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch):
    seen: list[list[str]] = []
    method = registry.AUGMENTATIONS[augment]

    def spy(convs: list[ConversationFeatures], settings: AugmentSettings,
            rng: np.random.Generator) -> list[ConversationFeatures]:
        seen.append([c.conversation_id for c in convs])
        out = method.augment(convs, settings, rng)
        seen.append([c.conversation_id for c in out])
        return out

    monkeypatch.setitem(registry.AUGMENTATIONS, augment,
                        registry.ImbalanceMethod(spy, method.class_weight_power))
    train, dev = tiny_corpora
    metrics = run_training(tiny_config(train, dev, tmp_path / "run", augment=augment))
    (given, returned) = seen  # called exactly once
    assert len(given) == 40 and all(cid.startswith("train-") for cid in given)  # never dev
    assert (len(returned) > 40) == (augment in ("oversample", "smote", "gan"))
    # Dev is scored on every labelled dev utterance, untouched.
    dev_labelled = sum(u.label is not None for u in read_jsonl(dev).utterances())
    assert sum(v["support"] for v in metrics["dev"]["per_class"].values()) == dev_labelled
    assert json.loads((tmp_path / "run" / "config.json").read_text())["augment"] == augment


def test_train_cli_augments_with_the_gan(tiny_corpora, tmp_path: Path):
    train, dev = tiny_corpora
    root = Path(__file__).resolve().parents[2]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(root),
           "OMP_NUM_THREADS": "1", "CBERL_CACHE_DIR": str(tmp_path / "cache")}
    args = [sys.executable, "-m", "cberl_model.train", "--train", f"jsonl:{train}", "--dev",
            f"jsonl:{dev}", "--run-dir", "run", "--epochs", "1", "--latent-dim", "16",
            "--lstm-hidden", "8", "--gat-heads", "2", "--gan-epochs", "2", "--augment-ratio", "0.5",
            "--no-progress"]
    done = subprocess.run([*args, "--augment", "gan"], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "GAN augmentation:" in done.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["augment_ratio"] == 0.5
    bad = subprocess.run([*args, "--augment", "mixup"], cwd=tmp_path, env=env, text=True,
                         capture_output=True, timeout=600)
    assert bad.returncode == 2 and "unknown augmentation 'mixup'" in bad.stderr


def test_asr_corpus_replaces_texts_with_what_asr_hears_and_caches_it(tmp_path):
    from cberl_model.augment.asr_text import asr_corpus

    heard: list[int] = []

    def transcribe(audios):
        heard.extend(a.size for a in audios)
        assert all(a.dtype == np.float32 and a.size > 1600 for a in audios)  # > 0.1 s of sound
        return [f"heard {len(heard) - len(audios) + i}" for i in range(len(audios))]

    corpus = Corpus("c", ("neutral", "joy"), [Conversation("d", [
        Utterance("u0", "A", "Hello there.", "joy"), Utterance("u1", "B", "", "neutral"),
        Utterance("u2", "A", "Okay then.", "neutral")])])
    out = asr_corpus(corpus, transcribe, "fake", tmp_path)
    texts = [u.text for u in out.utterances()]
    assert texts[1] == "" and texts[0].startswith("heard") and texts[2].startswith("heard")
    assert [u.label for u in out.utterances()] == ["joy", "neutral", "neutral"]
    assert len(heard) == 2
    again = asr_corpus(corpus, transcribe, "fake", tmp_path)  # from the cache: no new ASR
    assert len(heard) == 2 and [u.text for u in again.utterances()] == texts


def test_the_asr_share_is_decided_per_utterance_so_a_subset_hears_what_its_pool_hears():
    from cberl_model.augment.asr_text import is_chosen

    ids = [f"dia{d}_utt{u}" for d in range(200) for u in range(10)]
    chosen = {i for i in ids if is_chosen(i, 0, 0.5)}
    assert 0.45 < len(chosen) / len(ids) < 0.55
    subset = ids[::7]  # e.g. train alone, against train pooled with dev
    assert {i for i in subset if is_chosen(i, 0, 0.5)} == chosen & set(subset)
    assert all(is_chosen(i, 0, 1.0) for i in ids)
    assert {i for i in ids if is_chosen(i, 1, 0.5)} != chosen  # the seed matters
    assert {i for i in ids if is_chosen(i, 0, 0.2)} <= chosen  # a smaller share is inside



def test_a_seeded_share_loses_its_exclamation_marks_and_nothing_else():
    from cberl_model.augment.asr_text import is_chosen, without_exclamations

    utts = [Utterance(f"dia{d}_utt{u}", "A", f"No way! Really?! {d}", "joy")
            for d in range(100) for u in range(4)]
    corpus = Corpus("c", ("joy",), [Conversation("d", utts + [Utterance("e", "B", "", "joy")])])
    out = without_exclamations(corpus, 0.5)
    texts = {u.utterance_id: u.text for u in out.utterances()}
    plain = {i for i, t in texts.items() if t and "!" not in t}
    assert 0.4 < len(plain) / len(utts) < 0.6
    assert all(texts[i] == f"No way. Really?. {i.split('_')[0][3:]}" for i in plain)
    assert plain == {u.utterance_id for u in utts if is_chosen(u.utterance_id, 1, 0.5)}
    assert texts["e"] == "" and [u.label for u in out.utterances()] == ["joy"] * 401
    assert all("!" not in u.text for u in without_exclamations(corpus, 1.0).utterances())
    with pytest.raises(ValueError, match="fraction"):
        without_exclamations(corpus, 0.0)

def test_asr_fraction_trains_on_what_the_streamer_whisper_hears_of_train_never_dev(
        tmp_path: Path):
    """Real espeak-ng and the bundled Whisper: the training texts are heard, dev is not."""
    lines = ["I am so happy to see you!", "Get out of my house right now.",
             "Oh no, I think someone is following me.", "That smells absolutely disgusting.",
             "Well, I guess that is fine.", "Wow, I did not expect that at all!"]
    labels = ("neutral", "joy", "anger", "fear", "disgust", "surprise")

    def corpus(name: str, texts: list[str]) -> Path:
        convs = [Conversation(f"{name}-{k}", [
            Utterance(f"dia{k}_utt{i}", "AB"[i % 2], t, labels[(k + i) % len(labels)])
            for i, t in enumerate(texts)]) for k in range(2)]
        path = tmp_path / f"{name}.jsonl"
        write_jsonl(Corpus(name, labels, convs), path)
        return path

    train = corpus("train", lines)
    dev = corpus("dev", ["Could you pass me the salt, please?", "I really hate Mondays."])
    config = TrainConfig().updated({
        "train": f"jsonl:{train}", "dev": f"jsonl:{dev}", "run_dir": str(tmp_path / "run"),
        "cache_dir": str(tmp_path / "cache"), "epochs": 1, "latent_dim": 16, "lstm_hidden": 8,
        "gat_heads": 2, "progress": False, "adapt_encoder": False, "asr_fraction": 1.0})
    run_training(config)
    heard = [json.loads(line)["asr"] for line in
             (tmp_path / "cache" / "asr" / "transcripts.jsonl").read_text().splitlines()]
    # Both train conversations share their texts but not their ids, hence their voices:
    # at most one transcript per (text, voice), at least one per text; none of dev.
    assert len(lines) <= len(heard) <= 2 * len(lines)
    words = {w.strip(".,!?").lower() for t in lines for w in t.split()}
    recognised = [h for h in heard if {w.strip(".,!?").lower() for w in h.split()} & words]
    assert len(recognised) >= len(heard) // 2, heard
    assert json.loads((tmp_path / "run" / "config.json").read_text())["asr_fraction"] == 1.0
