"""Tests of the model artifact (``cberl_model.artifact``): round trip and every refusal.

A small CBERL on pre-computed features is saved to ``tmp_path`` and loaded back; each
corruption test damages one thing in a fresh copy of that directory and checks that
:func:`load_artifact` refuses it with a :class:`ModelError` naming the problem. One test
uses the real bundled MiniLM encoder with a LoRA adapter.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cberl_model.artifact import (
    DEFAULT_MODEL_DIR,
    FORMAT_VERSION,
    ModelError,
    load_artifact,
    save_artifact,
)
from cberl_model.features.corpus_features import (
    PRECOMPUTED,
    TEXT_ENCODER,
    FeatureSpec,
    ModalitySpec,
)
from cberl_model.features.text_encoder import LoraSpec, TextEncoder
from cberl_model.nn import CBERL, CBERLConfig
from cberl_model.windows import ConversationFeatures, WindowBatch, evaluation_windows
from tests.cberl_model.model_dirs import copy_model, edit_config

LABELS = ("neutral", "joy", "anger")
DIMS = {"text": 10, "audio": 4}


pytestmark = pytest.mark.usefixtures("single_thread")


def small_model(dims: dict[str, int], num_classes: int = len(LABELS),
                latent_dim: int = 32, seed: int = 0) -> CBERL:
    """A small, randomly initialised CBERL with non-trivial standardisation buffers.

    Args:
        dims: Input dimension per modality.
        num_classes: Number of classes.
        latent_dim: Fused latent size.
        seed: Torch seed of the initialisation.

    Returns:
        The model in eval mode.
    """
    torch.manual_seed(seed)
    config = CBERLConfig(input_dims=dict(dims), num_classes=num_classes, past=4, future=2,
                         latent_dim=latent_dim, fusion_hidden=16, lstm_hidden=8, gat_heads=2,
                         gat_layers=1, edge_type_dim=4, dropout=0.1, ensemble_members=2,
                         ensemble_hidden=8, ensemble_seed=7, extra={"note": "test"})
    model = CBERL(config)
    for m, d in dims.items():
        model.standardize[m].mean.copy_(torch.randn(d))
        model.standardize[m].std.copy_(torch.rand(d) + 0.5)
    return model.eval()


def precomputed_spec(dims: dict[str, int]) -> FeatureSpec:
    """Feature spec of pre-computed modalities (no text encoder needed).

    Args:
        dims: Feature dimension per modality.

    Returns:
        The spec.
    """
    return {m: ModalitySpec(PRECOMPUTED, f"{PRECOMPUTED}-{d}", d) for m, d in dims.items()}


def sample_batch(dims: dict[str, int], past: int, future: int) -> WindowBatch:
    """Every evaluation window of two random conversations, batched.

    Args:
        dims: Feature dimension per modality.
        past: Window past.
        future: Window future.

    Returns:
        The batch.
    """
    rng = np.random.default_rng(0)
    convs = []
    for c, n in enumerate((5, 3)):
        present = {m: rng.random(n) < 0.7 for m in dims}
        features = {m: rng.standard_normal((n, d)).astype(np.float32) * present[m][:, None]
                    for m, d in dims.items()}
        convs.append(ConversationFeatures(
            f"c{c}", [f"c{c}_{i}" for i in range(n)], list("ABAAB")[:n],
            {m: x.astype(np.float32) for m, x in features.items()}, present,
            rng.integers(len(LABELS), size=n)))
    return WindowBatch.collate(evaluation_windows(convs, past, future), past, future, 4.0)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CBERL]:
    """One saved pre-computed-feature artifact shared (read-only) by the tests."""
    model = small_model(DIMS)
    path = tmp_path_factory.mktemp("artifact") / "model"
    out = save_artifact(path, model, None, LABELS, precomputed_spec(DIMS),
                        training={"corpus": "unit-test", "epochs": 1},
                        metrics={"dev": {"weighted_f1": 0.5}})
    assert out == path
    return path, model


@pytest.fixture
def copy_of(saved: tuple[Path, CBERL], tmp_path: Path) -> Path:
    """A private copy of the saved artifact that a test may damage."""
    return copy_model(saved[0], tmp_path / "model")


# --------------------------------------------------------------------------- round trip


def test_round_trip_identical(saved: tuple[Path, CBERL]) -> None:
    path, model = saved
    artifact = load_artifact(path)
    assert artifact.encoder is None
    assert artifact.labels == LABELS
    assert artifact.feature_spec == precomputed_spec(DIMS)
    assert artifact.path == path
    assert artifact.model_id.startswith("cberl-") and len(artifact.model_id) == len("cberl-") + 12
    assert artifact.card["training"] == {"corpus": "unit-test", "epochs": 1}
    loaded = artifact.model
    assert not loaded.training
    assert loaded.config == model.config
    assert repr(loaded) == repr(model)
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for key, value in original.items():
        assert torch.equal(value, restored[key]), key
    batch = sample_batch(DIMS, model.config.past, model.config.future)
    assert torch.equal(model.predict_proba(batch), loaded.predict_proba(batch))


def test_directory_layout(saved: tuple[Path, CBERL]) -> None:
    path, model = saved
    names = sorted(p.name for p in path.iterdir())
    assert names == ["config.json", "labels.txt", "model.safetensors"]
    assert not [p for p in path.rglob("*") if p.suffix in {".pt", ".pth", ".pkl", ".pickle",
                                                            ".bin", ".ckpt"}]
    card = json.loads((path / "config.json").read_text())
    assert card["format_version"] == FORMAT_VERSION
    assert card["labels"] == list(LABELS)
    assert card["windows"] == {"past": 4, "future": 2}
    assert card["architecture"] == model.config.to_dict()
    assert card["feature_spec"] == {
        "text": {"extractor": PRECOMPUTED, "feature_id": "precomputed-10", "dim": 10},
        "audio": {"extractor": PRECOMPUTED, "feature_id": "precomputed-4", "dim": 4}}
    assert card["encoder"] is None
    assert card["metrics"] == {"dev": {"weighted_f1": 0.5}}
    assert (path / "labels.txt").read_text().splitlines() == list(LABELS)


def test_model_id_follows_weights(tmp_path: Path) -> None:
    spec = precomputed_spec(DIMS)
    a = save_artifact(tmp_path / "a", small_model(DIMS, seed=0), None, LABELS, spec, {}, {})
    b = save_artifact(tmp_path / "b", small_model(DIMS, seed=0), None, LABELS, spec, {}, {})
    c = save_artifact(tmp_path / "c", small_model(DIMS, seed=1), None, LABELS, spec, {}, {})
    ids = [load_artifact(p).model_id for p in (a, b, c)]
    assert ids[0] == ids[1] != ids[2]


# --------------------------------------------------------------------------- refusals


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_artifact(tmp_path / "nowhere")


def test_missing_config(copy_of: Path) -> None:
    (copy_of / "config.json").unlink()
    with pytest.raises(ModelError, match="config.json is missing"):
        load_artifact(copy_of)


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x00garbage", b""])
def test_config_not_json(copy_of: Path, content: bytes) -> None:
    (copy_of / "config.json").write_bytes(content)
    with pytest.raises(ModelError, match="not valid JSON"):
        load_artifact(copy_of)


def test_config_not_an_object(copy_of: Path) -> None:
    (copy_of / "config.json").write_text("[1, 2, 3]")
    with pytest.raises(ModelError, match="JSON object"):
        load_artifact(copy_of)


@pytest.mark.parametrize("version", [0, 2, "1"])
def test_wrong_format_version(copy_of: Path, version: object) -> None:
    edit_config(copy_of, lambda card: card.update(format_version=version))
    with pytest.raises(ModelError, match="format_version"):
        load_artifact(copy_of)


@pytest.mark.parametrize("key", ["format_version", "model_id", "labels", "architecture",
                                 "feature_spec"])
def test_missing_required_key(copy_of: Path, key: str) -> None:
    edit_config(copy_of, lambda card: card.pop(key))
    with pytest.raises(ModelError, match=f"lacks {key}"):
        load_artifact(copy_of)


def test_missing_weights(copy_of: Path) -> None:
    (copy_of / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="model.safetensors is missing"):
        load_artifact(copy_of)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_weights(copy_of: Path, damage: str) -> None:
    file = copy_of / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes({"truncate": data[: len(data) // 2],
                      "garbage": b"this is not a safetensors file" * 10,
                      "empty": b""}[damage])
    with pytest.raises(ModelError, match="not a readable safetensors file"):
        load_artifact(copy_of)


def test_weights_do_not_match_config(copy_of: Path) -> None:
    edit_config(copy_of, lambda card: card["architecture"].update(latent_dim=64))
    with pytest.raises(ModelError, match="does not match its config.json") as info:
        load_artifact(copy_of)
    assert "shape" in str(info.value)


def test_weights_of_other_modalities(copy_of: Path) -> None:
    def add_visual(card: dict[str, Any]) -> None:
        """Declare a visual input the saved weights do not have."""
        card["architecture"]["input_dims"]["visual"] = 3
        card["feature_spec"]["visual"] = {"extractor": PRECOMPUTED,
                                          "feature_id": "precomputed-3", "dim": 3}
    edit_config(copy_of, add_visual)
    with pytest.raises(ModelError, match="missing standardize.visual"):
        load_artifact(copy_of)


def test_label_count_mismatch(copy_of: Path) -> None:
    edit_config(copy_of, lambda card: card["labels"].append("sadness"))
    with pytest.raises(ModelError, match="4 labels but the architecture has 3 classes"):
        load_artifact(copy_of)


def test_unknown_architecture_key(copy_of: Path) -> None:
    edit_config(copy_of, lambda card: card["architecture"].update(attention="flash"))
    with pytest.raises(ModelError, match="architecture does not fit this code") as info:
        load_artifact(copy_of)
    assert "attention" in str(info.value)


def test_malformed_feature_spec(copy_of: Path) -> None:
    edit_config(copy_of, lambda card: card["feature_spec"]["text"].update(version=3))
    with pytest.raises(ModelError, match="malformed feature_spec"):
        load_artifact(copy_of)


def test_text_encoder_spec_without_encoder_entry(copy_of: Path) -> None:
    def as_encoded(card: dict[str, Any]) -> None:
        """Claim the text features come from an encoder."""
        card["feature_spec"]["text"]["extractor"] = TEXT_ENCODER
    edit_config(copy_of, as_encoded)
    with pytest.raises(ModelError, match="need an encoder entry"):
        load_artifact(copy_of)


def test_architecture_value_of_wrong_type(copy_of: Path) -> None:
    # A hand-edited value of the wrong type must be a ModelError (the CLI reports those),
    # not a TypeError from deep inside torch.
    edit_config(copy_of, lambda card: card["architecture"].update(latent_dim="32"))
    with pytest.raises(ModelError, match="architecture"):
        load_artifact(copy_of)


def _spec_dim_differs(card: dict[str, Any]) -> None:
    """Give the spec's audio a dimension the architecture does not have."""
    card["feature_spec"]["audio"].update(dim=5, feature_id="precomputed-5")


def _spec_lacks_modality(card: dict[str, Any]) -> None:
    """Drop a modality the architecture expects from the spec."""
    del card["feature_spec"]["audio"]


def _spec_extra_modality(card: dict[str, Any]) -> None:
    """Add a modality the architecture has no encoder for to the spec."""
    card["feature_spec"]["visual"] = {"extractor": PRECOMPUTED, "feature_id": "precomputed-3",
                                      "dim": 3}


@pytest.mark.parametrize("change", [_spec_dim_differs, _spec_lacks_modality,
                                    _spec_extra_modality])
def test_feature_spec_must_match_architecture(copy_of: Path,
                                              change: Callable[[dict[str, Any]], None]) -> None:
    # The feature spec decides what inference feeds the network; if its modalities or
    # dimensions disagree with architecture.input_dims the model cannot run, so loading
    # must refuse it instead of failing later on the first utterance.
    edit_config(copy_of, change)
    with pytest.raises(ModelError, match="feature_spec"):
        load_artifact(copy_of)


def test_resave_removes_stale_adapter(tmp_path: Path) -> None:
    # A directory that held an adapted model is overwritten with one without adapter:
    # the old encoder_adapter.safetensors must not survive nor enter the model id.
    model, spec = small_model(DIMS), precomputed_spec(DIMS)
    reused = tmp_path / "reused"
    reused.mkdir()
    save_file({"base_model.lora_A.weight": torch.zeros(2, 2)},
              str(reused / "encoder_adapter.safetensors"))
    save_artifact(reused, model, None, LABELS, spec, {}, {})
    fresh = save_artifact(tmp_path / "fresh", model, None, LABELS, spec, {}, {})
    assert sorted(p.name for p in reused.iterdir()) == sorted(p.name for p in fresh.iterdir())
    assert load_artifact(reused).model_id == load_artifact(fresh).model_id


# --------------------------------------------------------------------------- text encoder


def test_text_encoder_artifact(tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = TextEncoder(lora=LoraSpec(rank=2, alpha=4))
    # Give the adapter non-initial weights (LoRA B starts at zero) so a lost adapter shows.
    with torch.no_grad():
        for name, param in encoder.backbone.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.01)
    spec = {"text": ModalitySpec(TEXT_ENCODER, encoder.feature_id(), encoder.dim)}
    model = small_model({"text": encoder.dim})
    path = save_artifact(tmp_path / "model", model, encoder, LABELS, spec, {}, {})
    assert (path / "encoder_adapter.safetensors").is_file()
    card = json.loads((path / "config.json").read_text())
    assert card["encoder"]["feature_id"] == encoder.feature_id()
    assert card["encoder"]["lora"]["rank"] == 2

    artifact = load_artifact(path)
    assert artifact.encoder is not None
    assert artifact.encoder.feature_id() == encoder.feature_id()
    assert not artifact.encoder.training
    texts = ["I can't believe it!", "ok."]
    assert np.allclose(artifact.encoder.encode(texts), encoder.encode(texts), atol=1e-5)

    tampered = copy_model(path, tmp_path / "tampered",
                          lambda c: c["encoder"].update(fingerprint="0123456789abcdef"))
    with pytest.raises(ModelError, match="text encoder") as info:
        load_artifact(tampered)
    assert "fingerprint" in str(info.value)
    deferred = load_artifact(tampered, defer_encoder=True)  # loads; the encoder's error waits
    with pytest.raises(ModelError, match="fingerprint"):
        deferred.text_encoder()

    no_adapter = copy_model(path, tmp_path / "no_adapter")
    (no_adapter / "encoder_adapter.safetensors").unlink()
    with pytest.raises(ModelError, match="encoder_adapter.safetensors is missing"):
        load_artifact(no_adapter)

    other_adapter = copy_model(path, tmp_path / "other_adapter",
                               lambda c: c["feature_spec"]["text"].update(feature_id="ffffffffffffffff"))
    with pytest.raises(ModelError, match="differ from the ones it was trained on"):
        load_artifact(other_adapter)


MALFORMED_CONFIGS = {
    "labels-not-a-list": lambda card: card.update(labels=5),
    "feature-spec-a-list": lambda card: card.update(feature_spec=[1]),
    "encoder-a-string": lambda card: card.update(encoder="x"),
    "encoder-without-model": lambda card: card["encoder"].pop("model"),
    "lora-a-string": lambda card: card["encoder"].update(lora="x"),
    "lora-without-targets": lambda card: card["encoder"].update(lora={"rank": 1}),
    "input-dims-a-string": lambda card: card["architecture"].update(input_dims="x"),
}
"""``config.json`` damage that once escaped as TypeError/KeyError/AttributeError (default model)."""


@pytest.mark.parametrize("damage", list(MALFORMED_CONFIGS))
def test_malformed_config_is_a_model_error(tmp_path: Path, damage: str) -> None:
    path = copy_model(DEFAULT_MODEL_DIR, tmp_path / "m", MALFORMED_CONFIGS[damage])
    with pytest.raises(ModelError, match="config.json"):
        load_artifact(path)
