"""Raw media -> corpus builder -> training -> the served featurizers give the same features
and labels (train/serve parity), for a text+audio+visual and a text-only corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cberl_model.artifact import load_artifact
from cberl_model.corpus.build import BuildConfig, build_corpus
from cberl_model.corpus.media_files import read_media
from cberl_model.data import load_corpus
from cberl_model.features.corpus_features import featurize_corpus
from cberl_model.features.featurizers import FeaturizerSet
from cberl_model.features.media import FeaturizerError
from cberl_model.inference import EmotionRecognizer, UtteranceInput
from cberl_model.predict import predict_windows
from cberl_model.train.config import TrainConfig
from cberl_model.train.loop import dropped_modalities
from cberl_model.train.pipeline import run_training
from cberl_model.windows import evaluation_windows
from tests.cberl_model.media_corpus import make_meld_layout
from tests.cberl_model.model_dirs import copy_model

pytestmark = pytest.mark.usefixtures("single_thread")

FEATURIZERS = {"audio": "opensmile-egemaps-v02", "visual": "mediapipe-face-mesh"}


def _train(work: Path, featurizers: dict[str, str], csvs: tuple[Path, Path]) -> Path:
    for split, csv in zip(("train", "dev"), csvs, strict=True):
        build_corpus(BuildConfig(f"meld:{csv}", work / split, featurizers, workers=1,
                                 progress=False))
    config = TrainConfig(train=f"cached:{work / 'train'}", dev=f"cached:{work / 'dev'}",
                         run_dir=str(work / "run"), cache_dir=str(work / "cache"), device="cpu",
                         adapt_encoder=False, epochs=3, patience=3, latent_dim=32,
                         lstm_hidden=16, progress=False, batch_size=4)
    run_training(config)
    return work / "run" / "model"


@pytest.fixture(scope="module")
def meld_raw(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_meld_layout(tmp_path_factory.mktemp("meld_raw"))


@pytest.fixture(scope="module")
def multimodal(meld_raw, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("multimodal")
    return work, _train(work, FEATURIZERS, meld_raw)


def test_artifact_names_the_featurizers(multimodal) -> None:
    _, model = multimodal
    spec = json.loads((model / "config.json").read_text())["feature_spec"]
    assert {m: s["extractor"] for m, s in spec.items()} == {"text": "text-encoder", **FEATURIZERS}
    assert (spec["audio"]["dim"], spec["visual"]["dim"]) == (88, 369)
    assert load_artifact(model).model.config.input_dims == {"text": 384, "audio": 88, "visual": 369}


def test_served_features_and_labels_equal_training(multimodal) -> None:
    work, model = multimodal
    artifact = load_artifact(model)
    featurizers = FeaturizerSet.from_artifact(artifact, device="cpu")
    assert featurizers.modalities == ("text", "audio", "visual")
    recognizer = EmotionRecognizer(artifact)
    corpus = load_corpus(f"cached:{work / 'dev'}")
    trained = featurize_corpus(corpus, artifact.feature_spec, artifact.encoder,
                               labels=artifact.labels)
    for conv, features in zip(corpus.conversations, trained, strict=True):
        # The streamer's path: decoded media -> FeaturizerSet -> Utterance event -> worker.
        media = [read_media(u.text, u.audio_path, u.video_path) for u in conv]
        served = featurizers.featurize(media)
        for row, (utt, vectors) in enumerate(zip(conv, served, strict=True)):
            for modality in ("audio", "visual"):
                if modality in utt.features:
                    np.testing.assert_array_equal(vectors[modality], utt.features[modality])
                else:
                    assert vectors[modality] is None
            np.testing.assert_allclose(vectors["text"], features.features["text"][row], atol=1e-5)
        state = recognizer.open_call(conv.conversation_id)
        for utt, vectors in zip(conv, served, strict=True):
            state, _ = recognizer.add_utterance(state, UtteranceInput(
                utt.utterance_id, utt.speaker, features=vectors))
        _, closing = recognizer.end_call(state)
        expected = predict_windows(artifact.model, evaluation_windows(
            [features], artifact.model.config.past, artifact.model.config.future),
            torch.device("cpu"))
        by_id = {u.utterance_id: u for u in closing}
        assert len(by_id) == len(conv)  # dialogues of 2 with future 2: all open at the end
        for utt, probs in zip(conv, expected, strict=True):
            assert by_id[utt.utterance_id].label == artifact.labels[int(probs.argmax())]
            np.testing.assert_allclose(list(by_id[utt.utterance_id].scores.values()), probs,
                                       atol=1e-5)


def test_mismatched_featurizer_version_fails_loudly(multimodal, tmp_path: Path) -> None:
    _, model = multimodal
    copy = copy_model(model, tmp_path / "model",
                      lambda card: card["feature_spec"]["visual"].update(feature_id="1-mediapipe0.9.0"))
    with pytest.raises(FeaturizerError, match="visual featurizer mismatch.*'1-mediapipe0.9.0'"):
        FeaturizerSet.from_artifact(load_artifact(copy), device="cpu")


def test_text_only_corpus_trains_a_text_only_model(meld_raw, tmp_path: Path) -> None:
    model = _train(tmp_path, {}, meld_raw)
    artifact = load_artifact(model)
    assert list(artifact.feature_spec) == ["text"]
    assert FeaturizerSet.from_artifact(artifact).modalities == ("text",)


def test_modality_dropout_never_empties_a_node() -> None:
    torch.manual_seed(0)
    present = {"text": torch.ones(4000, dtype=torch.bool),
               "audio": torch.rand(4000) < 0.7, "visual": torch.zeros(4000, dtype=torch.bool)}
    dropped = dropped_modalities(present, 0.3)
    kept_any = torch.stack(list(dropped.values())).any(0)
    assert kept_any.all()  # every node keeps a modality
    assert not (dropped["audio"] & ~present["audio"]).any()  # nothing absent is invented
    rate = 1 - dropped["audio"].sum() / present["audio"].sum()
    assert 0.2 < float(rate) < 0.4
    text_only = {"text": torch.ones(10, dtype=torch.bool)}
    state = torch.get_rng_state()
    assert dropped_modalities(text_only, 0.3) is text_only
    assert torch.equal(state, torch.get_rng_state())  # text-only training draws nothing
