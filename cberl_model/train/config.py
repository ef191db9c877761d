"""The run configuration: one typed object, from a TOML/JSON file and/or flags."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from cberl_model.features.text_encoder import DEFAULT_TEXT_MODEL
from cberl_model.runtime import ConfigError

MINILM_ENCODER: dict[str, Any] = {"text_model": DEFAULT_TEXT_MODEL, "encoder_lora_rank": 16,
                                  "encoder_bf16": False}
"""Stage 1 as every recipe had it before all-mpnet-base-v2 won the MELD CV: benchmarks whose
committed results were measured with it (the MiniLM CV variants, the ablation) pin it, so
that a recipe changing its encoder does not silently change, and re-run, them."""


@dataclass
class TrainConfig:
    """Everything that determines a training run; saved as ``config.json`` in the run dir.

    Corpus specs are ``FORMAT:PATH`` (see :func:`cberl_model.data.load_corpus`).

    Raises:
        ConfigError: On construction, if a setting is out of range or names an unknown
            choice (every problem found is named), before any corpus is read.
    """

    seed: int = 0
    train: str = ""
    dev: str = ""
    run_dir: str = "runs/cberl"
    model_dir: str = ""
    device: str = "auto"
    cache_dir: str = ""
    # Stage 1: text encoder and its adaptation (LoRA on the training split's labels).
    text_model: str = DEFAULT_TEXT_MODEL
    adapt_encoder: bool = True
    encoder_seed: int = 0
    crossfit_folds: int = 0
    encoder_epochs: int = 3
    encoder_lr: float = 5e-4
    encoder_batch_size: int = 32
    encoder_max_tokens: int = 64
    encoder_lora_rank: int = 16
    # Stage 1's training steps under bfloat16 autocast (2.1x faster for all-mpnet-base-v2 on
    # this CPU); features stay float32, as serving computes them.
    encoder_bf16: bool = False
    # Earlier turns (with speaker names, past only) in the encoder's input; 0: the utterance
    # alone. Serving must pass the call's past turns (TextEncoder.encode_turns).
    encoder_context_turns: int = 0
    # ASR-robust training: this share of the training split's utterances (never dev) gets
    # the text the streamer's Whisper hears of it spoken by espeak-ng, as live calls give
    # (cberl_model/augment/asr_text.py; transcripts are cached, so each is paid once).
    asr_fraction: float = 0.0
    # This share of the training split's utterances (never dev) gets its "!" written ".", as
    # Whisper writes espeak-ng speech (augment/asr_text.without_exclamations): no ASR pass.
    exclamation_fraction: float = 0.0
    # Stage 2: augmentation of the training conversations (see train/augment.py):
    # none | oversample | smote | gan | classweight; each class is topped up to
    # augment_ratio * the largest class count (docs/augmentation.md).
    augment: str = "none"
    augment_ratio: float = 0.25
    gan_epochs: int = 30
    # Stage 3: the CBERL network.
    past: int = 10
    future: int = 2
    full_future_rate: float = 0.5
    latent_dim: int = 256
    lstm_hidden: int = 128
    gat_heads: int = 4
    gat_layers: int = 2
    dropout: float = 0.5
    ensemble_members: int = 5
    fusion: str = "djvae"     # "concat": concatenation instead of DJVAE (ablation)
    use_graph: bool = True    # False: Bi-LSTM context only, no speaker GAT (ablation)
    mask_rate: float = 0.15
    modality_dropout: float = 0.3  # per node and modality; only with 2+ modalities (loop.py)
    target_mask_rate: float = 0.0
    focal_gamma: float = 0.0
    class_weight_power: float = 0.3
    reconstruction_weight: float = 0.3
    vae_weight: float = 0.1
    kl_weight: float = 0.01
    epochs: int = 20
    patience: int = 5
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-4
    # Post-hoc class-prior correction: "label=bias,..." added to every ensemble member's
    # logits after training (folded into the classifier's output biases, so serving needs
    # nothing new); fitted out of fold by benchmarks/quality.py --cv (train/prior.py).
    logit_bias: str = ""
    progress: bool = True

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError("invalid setting(s): " + "; ".join(problems))

    def problems(self) -> list[str]:
        """What is wrong with these settings (empty when they are valid)."""
        from cberl_model.nn.cberl import FUSIONS
        from cberl_model.train.augment import get_augmentation

        values = asdict(self)
        wrong_type = [f"{f.name} must be a {type(f.default).__name__}, got {values[f.name]!r}"
                      for f in fields(self) if not _fits(values[f.name], type(f.default))]
        if wrong_type:
            return wrong_type  # the range checks below would compare the wrong types
        out = []
        try:
            get_augmentation(self.augment)
        except ConfigError as exc:
            out.append(str(exc))
        if self.fusion not in FUSIONS:
            out.append(f"fusion must be one of {', '.join(FUSIONS)}, got {self.fusion!r}")
        out += [f"{name} must be >= 1, got {values[name]}" for name in _AT_LEAST_ONE
                if values[name] < 1]
        out += [f"{name} must be >= 0, got {values[name]}" for name in _AT_LEAST_ZERO
                if values[name] < 0]
        out += [f"{name} must be in [0, 1), got {values[name]}" for name in _RATES
                if not 0.0 <= values[name] < 1.0]
        if not 0.0 <= self.full_future_rate <= 1.0:
            out.append(f"full_future_rate must be in [0, 1], got {self.full_future_rate}")
        for name in ("asr_fraction", "exclamation_fraction"):
            if not 0.0 <= values[name] <= 1.0:
                out.append(f"{name} must be in [0, 1], got {values[name]}")
        if not 0.0 < self.augment_ratio <= 1.0:
            out.append(f"augment_ratio must be in (0, 1], got {self.augment_ratio}")
        try:
            parse_logit_bias(self.logit_bias)
        except ConfigError as exc:
            out.append(str(exc))
        if self.use_graph and self.gat_heads >= 1 and (2 * self.latent_dim) % self.gat_heads:
            out.append(f"the speaker GAT's width 2 * latent_dim ({2 * self.latent_dim}) must be "
                       f"divisible by gat_heads ({self.gat_heads})")
        return out

    @classmethod
    def from_file(cls, path: Path) -> TrainConfig:
        """Read a ``.toml`` or ``.json`` file whose keys are field names.

        Raises:
            ConfigError: On an unknown key (naming it) or an invalid value.
        """
        text = path.read_text()
        data: dict[str, Any] = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        return cls().updated(data, source=str(path))

    def updated(self, values: dict[str, Any], source: str = "flags") -> TrainConfig:
        """A copy with ``values`` applied; unknown keys are an error."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}")
        try:
            return TrainConfig(**{**asdict(self), **values})
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_AT_LEAST_ONE = ("epochs", "batch_size", "gat_heads", "ensemble_members", "gan_epochs")
_AT_LEAST_ZERO = ("past", "future", "patience", "crossfit_folds", "focal_gamma",
                  "encoder_context_turns")
_RATES = ("dropout", "mask_rate", "target_mask_rate", "modality_dropout")


def _fits(value: Any, kind: type) -> bool:
    """Whether ``value`` is of a field's type (an int is a fine float; a bool is no int)."""
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def parse_logit_bias(spec: str) -> dict[str, float]:
    """``"fear=0.8,disgust=1.1"`` -> ``{"fear": 0.8, "disgust": 1.1}`` ('' -> no bias).

    Raises:
        ConfigError: On an entry that is not ``label=number``.
    """
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        label, sep, value = part.partition("=")
        try:
            if not sep or not label.strip():
                raise ValueError
            out[label.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"logit_bias entries must be label=number, got {part!r}") from None
    return out
