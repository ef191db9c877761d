"""The run configuration: one typed object, from a TOML/JSON file and/or flags."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from cberl_model.features.text_encoder import DEFAULT_TEXT_MODEL


@dataclass
class TrainConfig:
    """Everything that determines a training run; saved as ``config.json`` in the run dir.

    Corpus specs are ``FORMAT:PATH`` (see :func:`cberl_model.data.load_corpus`).
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
    progress: bool = True

    @classmethod
    def from_file(cls, path: Path) -> TrainConfig:
        """Read a ``.toml`` or ``.json`` file whose keys are field names.

        Raises:
            ValueError: On an unknown key, naming it.
        """
        text = path.read_text()
        data: dict[str, Any] = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        return cls().updated(data, source=str(path))

    def updated(self, values: dict[str, Any], source: str = "flags") -> TrainConfig:
        """A copy with ``values`` applied; unknown keys are an error."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown setting(s) {', '.join(unknown)}")
        return TrainConfig(**{**asdict(self), **values})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
