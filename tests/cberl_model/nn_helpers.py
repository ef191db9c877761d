"""Tiny inputs shared by the tests of the network layers (``tests/cberl_model/test_<layer>.py``)."""

from __future__ import annotations

import numpy as np
import torch

from cberl_model.nn import (
    CBERL,
    CBERLConfig,
)
from cberl_model.windows import (
    ConversationFeatures,
    Window,
    WindowBatch,
)

ALL_DIMS = {"text": 12, "audio": 6, "visual": 5}
MODALITY_SETS = [("text",), ("text", "audio"), ("text", "audio", "visual")]


def make_conversation(rng: np.random.Generator, cid: str, length: int, dims: dict[str, int],
                      num_classes: int, present_rate: float = 0.8,
                      unlabelled: tuple[int, ...] = ()) -> ConversationFeatures:
    """A random conversation with the given modalities.

    Args:
        rng: Source of the features, speakers, presence and labels.
        cid: Conversation id.
        length: Number of utterances.
        dims: Feature dimension per modality.
        num_classes: Labels are drawn from ``0..num_classes-1``.
        present_rate: Probability that a non-text modality is present for an utterance
            (text is always present, as in the corpora).
        unlabelled: Utterance indices whose label is ``-1``.

    Returns:
        The conversation, absent rows zeroed like the featurizer does.
    """
    features: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}
    for m, d in dims.items():
        mask = np.ones(length, dtype=bool) if m == "text" else rng.random(length) < present_rate
        matrix = rng.standard_normal((length, d)).astype(np.float32)
        matrix[~mask] = 0.0
        features[m], present[m] = matrix, mask
    labels = rng.integers(num_classes, size=length).astype(np.int64)
    labels[list(unlabelled)] = -1
    speakers = [str(s) for s in rng.choice(["Ross", "Rachel", "Joey"], size=length)]
    return ConversationFeatures(
        conversation_id=cid, utterance_ids=[f"{cid}_u{i}" for i in range(length)],
        speakers=speakers, features=features, present=present, labels=labels)


def small_config(dims: dict[str, int], num_classes: int = 4, **overrides: object) -> CBERLConfig:
    """A CBERL configuration small enough for CPU unit tests.

    Args:
        dims: Input dimension per modality.
        num_classes: Number of emotion classes.
        **overrides: Any other :class:`CBERLConfig` field.

    Returns:
        The configuration.
    """
    base: dict[str, object] = dict(
        input_dims=dict(dims), num_classes=num_classes, past=3, future=1, latent_dim=16,
        fusion_hidden=16, lstm_hidden=8, gat_heads=2, gat_layers=2, edge_type_dim=4,
        dropout=0.0, ensemble_members=3, ensemble_hidden=8, ensemble_subspace=0.75)
    base.update(overrides)
    return CBERLConfig(**base)  # type: ignore[arg-type]


def collate(windows: list[Window], config: CBERLConfig) -> WindowBatch:
    """Batch windows with the model's window settings.

    Args:
        windows: Windows to flatten into one batch.
        config: Supplies ``past``, ``future`` and ``edge_decay``.

    Returns:
        The batch.
    """
    return WindowBatch.collate(windows, config.past, config.future, config.edge_decay)


def fusion_inputs(dims: dict[str, int], n: int,
                  seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Random features with every modality present.

    Args:
        dims: Feature dimension per modality.
        n: Number of nodes.
        seed: Torch seed of the draw.

    Returns:
        ``(features, present)`` dictionaries.
    """
    generator = torch.Generator().manual_seed(seed)
    features = {m: torch.randn(n, d, generator=generator) for m, d in dims.items()}
    present = {m: torch.ones(n, dtype=torch.bool) for m in dims}
    return features, present


def edge_table(edge_index: torch.Tensor, edge_type: torch.Tensor,
               edge_weight: torch.Tensor) -> dict[tuple[int, int], tuple[int, float]]:
    """Edges as ``{(source, target): (type, weight)}``, asserting there are no duplicates.

    Args:
        edge_index: ``(2, E)`` source/target indices.
        edge_type: ``(E,)`` relation types.
        edge_weight: ``(E,)`` distance weights.

    Returns:
        The edge dictionary.
    """
    table = {(int(s), int(t)): (int(k), float(w))
             for (s, t), k, w in zip(edge_index.t().tolist(), edge_type, edge_weight,
                                     strict=True)}
    assert len(table) == edge_index.size(1)
    return table


def build_model(modalities: tuple[str, ...], seed: int = 0, **overrides: object) -> CBERL:
    """A small CBERL for the given modalities, in eval mode.

    Args:
        modalities: Modalities of the input.
        seed: Torch seed for the initialisation.
        **overrides: Extra :class:`CBERLConfig` fields.

    Returns:
        The model.
    """
    torch.manual_seed(seed)
    return CBERL(small_config({m: ALL_DIMS[m] for m in modalities}, **overrides)).eval()
