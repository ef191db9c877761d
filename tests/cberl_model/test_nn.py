"""Unit tests of the CBERL network parts (``cberl_model.nn``) and the context windows.

PyG style (``test/nn/conv/``): tiny hand-built inputs, parametrised configs, output shapes
and ``repr``. Each property test is written so that a plausible regression makes it fail,
e.g. a window whose prediction leaks from its batch neighbours, a missing modality that
still moves the fused latent, or a focal loss that is no longer cross-entropy at gamma=0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from cberl_model.nn import (
    CBERL,
    CBERLConfig,
    ContextLSTM,
    DJVAEFusion,
    FocalLoss,
    MaskedReconstruction,
    SpeakerGAT,
    WeakClassifierEnsemble,
)
from cberl_model.window_graph import (
    FUTURE_OTHER,
    FUTURE_SAME,
    NUM_EDGE_TYPES,
    PAST_OTHER,
    PAST_SAME,
    SELF,
    window_edges,
)
from cberl_model.train.loop import ObjectiveWeights, Stage, Trainer
from cberl_model.windows import (
    ConversationFeatures,
    Window,
    WindowBatch,
    evaluation_windows,
    training_windows,
    window_bounds,
)

ALL_DIMS = {"text": 12, "audio": 6, "visual": 5}
MODALITY_SETS = [("text",), ("text", "audio"), ("text", "audio", "visual")]


pytestmark = pytest.mark.usefixtures("single_thread")


# --------------------------------------------------------------------------- helpers


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


# --------------------------------------------------------------------------- FocalLoss


def test_focal_loss_gamma_zero_is_cross_entropy() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(16, 5), torch.randint(5, (16,))
    loss = FocalLoss(gamma=0.0)
    assert repr(loss) == "FocalLoss(gamma=0.0, weighted=False)"
    out = loss(logits, target)
    assert out.dim() == 0
    assert torch.allclose(out, F.cross_entropy(logits, target), atol=1e-6)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 5.0])
def test_focal_loss_is_at_most_cross_entropy(gamma: float) -> None:
    torch.manual_seed(1)
    logits, target = 3 * torch.randn(32, 4), torch.randint(4, (32,))
    focal = FocalLoss(gamma=gamma)(logits, target)
    ce = F.cross_entropy(logits, target)
    assert 0 < focal.item() < ce.item()
    # Per example: (1 - p)^gamma * CE, i.e. easy examples are down-weighted.
    p = logits.softmax(-1)[torch.arange(32), target]
    expected = ((1 - p) ** gamma * -p.log()).mean()
    assert torch.allclose(focal, expected, atol=1e-6)


def test_focal_loss_class_weights() -> None:
    torch.manual_seed(2)
    logits, target = torch.randn(20, 3), torch.randint(3, (20,))
    weight = torch.tensor([1.0, 2.0, 0.5])
    weighted = FocalLoss(gamma=0.0, weight=weight)
    assert repr(weighted) == "FocalLoss(gamma=0.0, weighted=True)"
    # gamma=0 with weights: PyTorch's weighted cross-entropy (normalised by the weights).
    assert torch.allclose(weighted(logits, target),
                          F.cross_entropy(logits, target, weight=weight), atol=1e-6)
    # Uniform weights change nothing; a zero weight removes that class's examples.
    focal = FocalLoss(gamma=2.0)
    assert torch.allclose(FocalLoss(2.0, torch.full((3,), 7.0))(logits, target),
                          focal(logits, target), atol=1e-6)
    only_class_1 = FocalLoss(2.0, torch.tensor([0.0, 1.0, 0.0]))(logits, target)
    keep = target == 1
    assert torch.allclose(only_class_1, focal(logits[keep], target[keep]), atol=1e-6)
    # Up-weighting the class with the larger loss raises the mean.
    per_class = torch.stack([focal(logits[target == c], target[target == c]) for c in range(3)])
    hard = int(per_class.argmax())
    up = torch.ones(3)
    up[hard] = 10.0
    assert FocalLoss(2.0, up)(logits, target) > focal(logits, target)


def test_focal_loss_negative_gamma_raises() -> None:
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-0.5)


# --------------------------------------------------------------------------- DJVAEFusion


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


@pytest.mark.parametrize("modalities", MODALITY_SETS)
@pytest.mark.parametrize("latent_dim", [4, 16])
def test_djvae_fusion_shapes(modalities: tuple[str, ...], latent_dim: int) -> None:
    dims = {m: ALL_DIMS[m] for m in modalities}
    fusion = DJVAEFusion(dims, latent_dim=latent_dim, hidden_dim=8, dropout=0.0)
    assert repr(fusion) == f"DJVAEFusion({dims}, latent_dim={latent_dim})"
    features, present = fusion_inputs(dims, 5)
    out = fusion.eval()(features, present)
    for t in (out.z, out.mu, out.logvar):
        assert t.shape == (5, latent_dim)
    assert fusion.reconstruction_loss(out.z, features, present).dim() == 0


def test_djvae_fusion_needs_a_modality() -> None:
    with pytest.raises(ValueError, match="at least one modality"):
        DJVAEFusion({})


def test_djvae_node_without_modalities_gets_the_prior() -> None:
    dims = {"text": 12, "audio": 6}
    fusion = DJVAEFusion(dims, latent_dim=8, hidden_dim=16, dropout=0.0).eval()
    features, present = fusion_inputs(dims, 4)
    present["text"][2] = present["audio"][2] = False
    out = fusion(features, present)
    assert torch.equal(out.mu[2], torch.zeros(8))
    assert torch.allclose(out.logvar[2].exp(), torch.ones(8))
    assert torch.equal(out.z[2], torch.zeros(8))
    # The other nodes have a posterior tighter than the prior.
    assert (out.logvar[[0, 1, 3]] < 0).all()


def test_djvae_absent_modality_is_ignored() -> None:
    dims = {"text": 12, "audio": 6}
    fusion = DJVAEFusion(dims, latent_dim=8, hidden_dim=16, dropout=0.0).eval()
    features, present = fusion_inputs(dims, 6)
    present["audio"][:] = False
    out = fusion(features, present)
    # Changing the (absent) audio features changes nothing.
    features_b = dict(features, audio=100.0 * torch.randn(6, 6))
    out_b = fusion(features_b, present)
    assert torch.equal(out.mu, out_b.mu) and torch.equal(out.logvar, out_b.logvar)
    # And the result is exactly the product of the text expert with the N(0, I) prior.
    mu_t, logvar_t = fusion.encoders["text"](features["text"]).chunk(2, dim=-1)
    precision = torch.exp(-logvar_t.clamp(-8.0, 8.0))
    assert torch.allclose(out.mu, precision * mu_t / (1 + precision), atol=1e-6)
    assert torch.allclose(out.logvar, -torch.log1p(precision), atol=1e-6)
    # Present audio does move the latent (so the comparison above is meaningful).
    present["audio"][:] = True
    assert not torch.allclose(fusion(features, present).mu, out.mu)


def test_djvae_eval_deterministic_train_samples() -> None:
    dims = {"text": 12, "audio": 6}
    fusion = DJVAEFusion(dims, latent_dim=8, hidden_dim=16, dropout=0.0)
    features, present = fusion_inputs(dims, 5)
    fusion.eval()
    a, b = fusion(features, present), fusion(features, present)
    assert torch.equal(a.z, b.z) and torch.equal(a.z, a.mu)
    fusion.train()
    torch.manual_seed(0)
    c = fusion(features, present)
    d = fusion(features, present)
    assert not torch.allclose(c.z, c.mu)
    assert not torch.allclose(c.z, d.z)
    assert torch.allclose(c.mu, a.mu, atol=1e-6)  # dropout 0: only z is random


@pytest.mark.parametrize("modalities", MODALITY_SETS)
def test_djvae_kl_nonnegative(modalities: tuple[str, ...]) -> None:
    dims = {m: ALL_DIMS[m] for m in modalities}
    fusion = DJVAEFusion(dims, latent_dim=8, hidden_dim=16, dropout=0.0).eval()
    features, present = fusion_inputs(dims, 10, seed=3)
    features = {m: 5 * x for m, x in features.items()}
    present = {m: torch.arange(10) % (i + 2) != 0 for i, m in enumerate(dims)}
    out = fusion(features, present)
    kl = out.kl()
    assert kl.dim() == 0 and kl.item() >= 0.0 and math.isfinite(kl.item())
    # Exactly zero at the prior (no modality anywhere).
    prior = fusion(features, {m: torch.zeros(10, dtype=torch.bool) for m in dims})
    assert prior.kl().abs().item() < 1e-6


# --------------------------------------------------------------------------- ContextLSTM


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("hidden_dim", [4, 8])
def test_context_lstm_shape(num_layers: int, hidden_dim: int) -> None:
    lstm = ContextLSTM(6, hidden_dim, num_layers=num_layers, dropout=0.1)
    assert repr(lstm) == f"ContextLSTM(6, {2 * hidden_dim}, num_layers={num_layers})"
    x, batch = torch.randn(7, 6), torch.tensor([0, 0, 0, 1, 2, 2, 2])
    assert lstm.eval()(x, batch).shape == (7, 2 * hidden_dim)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_context_lstm_windows_are_independent(num_layers: int) -> None:
    torch.manual_seed(0)
    lstm = ContextLSTM(6, 5, num_layers=num_layers, dropout=0.3).eval()
    sizes = [4, 1, 6, 2, 3]
    x = torch.randn(sum(sizes), 6)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    together = lstm(x, batch)
    alone = torch.cat([lstm(chunk, torch.zeros(len(chunk), dtype=torch.long))
                       for chunk in x.split(sizes)])
    assert torch.allclose(together, alone, atol=1e-5)
    # It is bidirectional: the first node of a window sees what follows it.
    y = x.clone()
    y[3] += 1.0  # last node of window 0
    assert not torch.allclose(lstm(y, batch)[0], together[0])
    assert torch.allclose(lstm(y, batch)[4:], together[4:], atol=1e-6)


# --------------------------------------------------------------------------- window_edges


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


def test_window_edges_exact() -> None:
    decay = 4.0
    edge_index, edge_type, edge_weight = window_edges([0, 1, 0, 0], past=1, future=1,
                                                      decay=decay)
    assert edge_index.shape == (2, 10) and edge_index.dtype == torch.long
    assert edge_type.shape == (10,) and edge_weight.shape == (10,)
    one = math.exp(-1 / decay)
    expected = {
        (0, 0): (SELF, 1.0), (1, 1): (SELF, 1.0), (2, 2): (SELF, 1.0), (3, 3): (SELF, 1.0),
        # source earlier than target: the target looks at its past
        (0, 1): (PAST_OTHER, one), (1, 2): (PAST_OTHER, one), (2, 3): (PAST_SAME, one),
        # source later than target: the target looks at its future
        (1, 0): (FUTURE_OTHER, one), (2, 1): (FUTURE_OTHER, one), (3, 2): (FUTURE_SAME, one),
    }
    table = edge_table(edge_index, edge_type, edge_weight)
    assert table.keys() == expected.keys()
    for key, (kind, weight) in expected.items():
        assert table[key][0] == kind, key
        assert table[key][1] == pytest.approx(weight, abs=1e-6), key


def test_window_edges_asymmetric_past_future() -> None:
    speakers = [0, 0, 1, 0, 1]
    edge_index, edge_type, edge_weight = window_edges(speakers, past=2, future=0, decay=2.0)
    table = edge_table(edge_index, edge_type, edge_weight)
    expected_keys = {(s, t) for t in range(5) for s in range(max(0, t - 2), t + 1)}
    assert table.keys() == expected_keys
    for (s, t), (kind, weight) in table.items():
        if s == t:
            assert kind == SELF
        else:
            assert kind == (PAST_SAME if speakers[s] == speakers[t] else PAST_OTHER)
        assert weight == pytest.approx(math.exp(-(t - s) / 2.0), abs=1e-6)
    # Future only: every non-self edge comes from a later node.
    edge_index, edge_type, _ = window_edges(speakers, past=0, future=3)
    src, dst = edge_index
    assert (src >= dst).all()
    assert set(edge_type[src > dst].tolist()) <= {FUTURE_SAME, FUTURE_OTHER}
    assert int((src == dst).sum()) == 5
    assert 0 <= int(edge_type.min()) and int(edge_type.max()) < NUM_EDGE_TYPES


def test_window_edges_single_node() -> None:
    edge_index, edge_type, edge_weight = window_edges([3], past=10, future=2)
    assert edge_index.tolist() == [[0], [0]]
    assert edge_type.tolist() == [SELF] and edge_weight.tolist() == [1.0]


# --------------------------------------------------------------------------- SpeakerGAT


@pytest.mark.parametrize("heads,num_layers", [(1, 1), (2, 2), (4, 3)])
def test_speaker_gat_shape(heads: int, num_layers: int) -> None:
    gat = SpeakerGAT(8, heads=heads, num_layers=num_layers, edge_type_dim=3, dropout=0.0)
    assert repr(gat) == f"SpeakerGAT(8, heads={heads}, num_layers={num_layers})"
    edge_index, edge_type, edge_weight = window_edges([0, 1, 0, 1, 1], past=2, future=1)
    out = gat.eval()(torch.randn(5, 8), edge_index, edge_type, edge_weight)
    assert out.shape == (5, 8) and torch.isfinite(out).all()


def test_speaker_gat_heads_must_divide_dim() -> None:
    with pytest.raises(ValueError, match="divisible"):
        SpeakerGAT(10, heads=3)


def test_speaker_gat_uses_edge_types() -> None:
    torch.manual_seed(0)
    gat = SpeakerGAT(8, heads=2, num_layers=1, edge_type_dim=4, dropout=0.0).eval()
    x = torch.randn(4, 8)
    same = window_edges([0, 0, 0, 0], past=3, future=3)
    other = window_edges([0, 1, 2, 3], past=3, future=3)
    assert torch.equal(same[0], other[0])  # same graph, different relation types
    assert not torch.allclose(gat(x, *same), gat(x, *other))


# --------------------------------------------------------------------------- ensemble


@pytest.mark.parametrize("input_dim,num_members,subspace", [
    (10, 3, 0.3), (16, 5, 0.75), (7, 2, 1.0), (9, 4, 0.01)])
def test_ensemble_shape_and_masks(input_dim: int, num_members: int, subspace: float) -> None:
    ens = WeakClassifierEnsemble(input_dim, 3, num_members=num_members, hidden_dim=8,
                                 subspace=subspace, dropout=0.0, seed=1)
    assert repr(ens) == f"WeakClassifierEnsemble({input_dim}, 3, num_members={num_members})"
    logits = ens(torch.randn(6, input_dim))
    assert logits.shape == (num_members, 6, 3)
    keep = max(1, round(subspace * input_dim))
    assert ens.masks.shape == (num_members, input_dim)
    assert ens.masks.sum(1).tolist() == [float(keep)] * num_members
    assert set(ens.masks.unique().tolist()) <= {0.0, 1.0}
    probs = WeakClassifierEnsemble.probabilities(logits)
    assert probs.shape == (6, 3)
    assert torch.allclose(probs.sum(-1), torch.ones(6), atol=1e-6)


def test_ensemble_member_ignores_features_outside_its_subspace() -> None:
    ens = WeakClassifierEnsemble(12, 3, num_members=3, hidden_dim=8, subspace=0.5,
                                 dropout=0.0).eval()
    x = torch.randn(4, 12)
    for k in range(3):
        y = x.clone()
        y[:, ens.masks[k] == 0] = 50.0
        out_x, out_y = ens(x), ens(y)
        assert torch.allclose(out_x[k], out_y[k])
    # Different members see different subsets; the same seed draws the same ones.
    assert not all(torch.equal(ens.masks[0], m) for m in ens.masks[1:])
    again = WeakClassifierEnsemble(12, 3, num_members=3, hidden_dim=8, subspace=0.5)
    assert torch.equal(ens.masks, again.masks)


def test_ensemble_single_member_uses_all_features() -> None:
    ens = WeakClassifierEnsemble(10, 4, num_members=1, subspace=0.2)
    assert torch.equal(ens.masks, torch.ones(1, 10))
    assert ens(torch.randn(3, 10)).shape == (1, 3, 4)


@pytest.mark.parametrize("kwargs,match", [
    ({"num_members": 0}, "num_members"),
    ({"subspace": 0.0}, "subspace"),
    ({"subspace": 1.5}, "subspace"),
    ({"subspace": -0.1}, "subspace"),
])
def test_ensemble_invalid_arguments(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WeakClassifierEnsemble(8, 3, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- reconstruction


def test_masked_reconstruction_repr_and_shapes() -> None:
    rec = MaskedReconstruction(8, 12, {"text": 5, "audio": 3}, mask_rate=0.5)
    assert repr(rec) == "MaskedReconstruction(mask_rate=0.5, target_mask_rate=0.0, heads=['text', 'audio'])"
    fused = torch.randn(20, 8)
    masked, mask = rec.train().mask(fused, torch.zeros(20, dtype=torch.bool))
    assert masked.shape == (20, 8) and mask.shape == (20,) and mask.dtype == torch.bool
    assert torch.equal(masked[~mask], fused[~mask])
    assert torch.equal(masked[mask], rec.mask_token.expand(int(mask.sum()), 8))


def test_masked_reconstruction_protects_targets() -> None:
    torch.manual_seed(0)
    rec = MaskedReconstruction(4, 4, {"text": 3}, mask_rate=0.9).train()
    protected = torch.arange(200) % 3 == 0
    fused = torch.randn(200, 4)
    for _ in range(5):
        masked, mask = rec.mask(fused, protected)
        assert not (mask & protected).any()
        assert torch.equal(masked[protected], fused[protected])
        assert mask.any()


def test_masked_reconstruction_eval_masks_nothing() -> None:
    rec = MaskedReconstruction(4, 4, {"text": 3}, mask_rate=0.5).eval()
    fused = torch.randn(50, 4)
    masked, mask = rec.mask(fused, torch.zeros(50, dtype=torch.bool))
    assert not mask.any() and torch.equal(masked, fused)
    zero = MaskedReconstruction(4, 4, {"text": 3}, mask_rate=0.0).train()
    assert not zero.mask(fused, torch.zeros(50, dtype=torch.bool))[1].any()


@pytest.mark.parametrize("rate", [0.15, 0.5])
def test_masked_reconstruction_rate(rate: float) -> None:
    torch.manual_seed(0)
    rec = MaskedReconstruction(2, 2, {"text": 2}, mask_rate=rate).train()
    n = 20000
    protected = torch.zeros(n, dtype=torch.bool)
    protected[: n // 2] = True
    _, mask = rec.mask(torch.zeros(n, 2), protected)
    # Half the nodes are protected; the rest are masked at about ``rate``.
    observed = mask[n // 2:].float().mean().item()
    assert abs(observed - rate) < 0.03


def test_masked_reconstruction_loss() -> None:
    torch.manual_seed(0)
    rec = MaskedReconstruction(4, 6, {"text": 3, "audio": 2}, mask_rate=0.5)
    context = torch.randn(10, 6)
    features = {"text": torch.randn(10, 3), "audio": torch.randn(10, 2)}
    present = {"text": torch.ones(10, dtype=torch.bool), "audio": torch.zeros(10, dtype=torch.bool)}
    mask = torch.zeros(10, dtype=torch.bool)
    mask[[1, 4]] = True
    loss = rec.loss(context, mask, features, present)
    assert loss.dim() == 0
    expected = ((rec.heads["text"](context[mask]) - features["text"][mask]) ** 2).mean()
    assert torch.allclose(loss, expected)
    empty = rec.loss(context, torch.zeros(10, dtype=torch.bool), features, present)
    assert empty.dim() == 0 and empty.item() == 0.0


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_masked_reconstruction_invalid_rate(rate: float) -> None:
    with pytest.raises(ValueError, match="mask_rate"):
        MaskedReconstruction(4, 4, {"text": 3}, mask_rate=rate)


# --------------------------------------------------------------------------- windows


@pytest.mark.parametrize("index,known,past,future,expected", [
    (0, 5, 2, 1, (0, 2)),
    (3, 5, 2, 1, (1, 5)),
    (4, 5, 2, 1, (2, 5)),
    (4, 10, 10, 2, (0, 7)),
    (6, 7, 3, 0, (3, 7)),
    (2, 3, 0, 0, (2, 3)),
])
def test_window_bounds(index: int, known: int, past: int, future: int,
                       expected: tuple[int, int]) -> None:
    assert window_bounds(index, known, past, future) == expected


def test_window_batch_collate() -> None:
    rng = np.random.default_rng(0)
    conv_a = make_conversation(rng, "a", 5, {"text": 4, "audio": 2}, 3)
    conv_b = make_conversation(rng, "b", 3, {"text": 4, "audio": 2}, 3, unlabelled=(1,))
    conv_a.speakers = ["x", "y", "x", "x", "y"]
    conv_b.speakers = ["q", "q", "r"]
    windows = [Window(conv_a, 1, 5, 3), Window(conv_b, 0, 2, 1), Window(conv_a, 0, 1, 0)]
    batch = WindowBatch.collate(windows, past=2, future=1, edge_decay=4.0)
    assert batch.batch.tolist() == [0, 0, 0, 0, 1, 1, 2]
    assert batch.target.tolist() == [2, 5, 6]
    assert batch.labels.tolist() == [int(conv_a.labels[3]), -1, int(conv_a.labels[0])]
    assert batch.is_target.tolist() == [False, False, True, False, False, True, True]
    assert batch.features["text"].dtype == torch.float32
    assert batch.present["audio"].dtype == torch.bool
    assert torch.equal(batch.features["text"][:4], torch.from_numpy(conv_a.features["text"][1:5]))
    assert torch.equal(batch.features["audio"][4:6],
                       torch.from_numpy(conv_b.features["audio"][0:2]))
    assert batch.present["audio"].tolist() == (list(conv_a.present["audio"][1:5])
                                               + list(conv_b.present["audio"][0:2])
                                               + [bool(conv_a.present["audio"][0])])
    # Edges: each window's own graph, offset, never crossing windows.
    src, dst = batch.edge_index
    assert torch.equal(batch.batch[src], batch.batch[dst])
    expected = [window_edges(s, 2, 1) for s in ([0, 1, 1, 0], [0, 0], [0])]
    offsets = [0, 4, 6]
    assert torch.equal(batch.edge_index,
                       torch.cat([e[0] + o for e, o in zip(expected, offsets, strict=True)], 1))
    assert torch.equal(batch.edge_type, torch.cat([e[1] for e in expected]))
    assert torch.allclose(batch.edge_weight, torch.cat([e[2] for e in expected]))
    # Speaker identity is per window: same speaker -> *_SAME edge types.
    past_same = batch.edge_index[:, batch.edge_type == PAST_SAME].t().tolist()
    assert sorted(map(tuple, past_same)) == [(1, 2), (4, 5)]
    moved = batch.to(torch.device("cpu"))
    assert torch.equal(moved.edge_index, batch.edge_index)
    assert moved.features.keys() == batch.features.keys()


def test_evaluation_windows() -> None:
    rng = np.random.default_rng(1)
    convs = [make_conversation(rng, "a", 4, {"text": 3}, 2, unlabelled=(2,)),
             make_conversation(rng, "b", 2, {"text": 3}, 2)]
    windows = evaluation_windows(convs, past=2, future=1)
    assert [(w.conversation.conversation_id, w.start, w.end, w.target) for w in windows] == [
        ("a", 0, 2, 0), ("a", 0, 3, 1), ("a", 0, 4, 2), ("a", 1, 4, 3),
        ("b", 0, 2, 0), ("b", 0, 2, 1)]
    revision0 = evaluation_windows(convs, past=1, future=0)
    assert all(w.end == w.target + 1 for w in revision0)


@pytest.mark.parametrize("future", [0, 1, 3])
def test_training_windows(future: int) -> None:
    rng = np.random.default_rng(2)
    convs = [make_conversation(rng, "a", 30, {"text": 3}, 2, unlabelled=(0, 5, 29)),
             make_conversation(rng, "b", 20, {"text": 3}, 2)]
    full = training_windows(convs, past=4, future=future, full_future_rate=1.0,
                            rng=np.random.default_rng(0))
    assert len(full) == 47
    assert all(int(w.conversation.labels[w.target]) >= 0 for w in full)
    assert all((w.start, w.end) == window_bounds(w.target, len(w.conversation), 4, future)
               for w in full)
    truncated = training_windows(convs, past=4, future=future, full_future_rate=0.0,
                                 rng=np.random.default_rng(0))
    assert [w.target for w in truncated] == [w.target for w in full]
    for w in truncated:
        seen = w.end - w.target - 1
        room = len(w.conversation) - w.target - 1
        assert w.start == max(0, w.target - 4)
        if future == 0:
            assert seen == 0
        else:
            assert 0 <= seen <= min(future - 1, room)
    if future == 3:  # the truncation is random, not always the same amount
        assert len({w.end - w.target for w in truncated if w.target < 15}) > 1


# --------------------------------------------------------------------------- CBERL


@pytest.fixture(scope="module")
def conversations() -> dict[tuple[str, ...], list[ConversationFeatures]]:
    """Three random conversations per modality subset (4 classes)."""
    out = {}
    for modalities in MODALITY_SETS:
        rng = np.random.default_rng(len(modalities))
        dims = {m: ALL_DIMS[m] for m in modalities}
        out[modalities] = [make_conversation(rng, f"c{i}", n, dims, 4, unlabelled=(1,))
                           for i, n in enumerate((6, 3, 5))]
    return out


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


@pytest.mark.parametrize("modalities", MODALITY_SETS)
def test_cberl_forward(modalities: tuple[str, ...],
                       conversations: dict[tuple[str, ...], list[ConversationFeatures]]) -> None:
    model = build_model(modalities)
    assert repr(model) == f"CBERL(modalities={list(modalities)}, classes=4, past=3, future=1)"
    windows = evaluation_windows(conversations[modalities], model.config.past,
                                 model.config.future)
    batch = collate(windows, model.config)
    out = model(batch)
    assert out.logits.shape == (3, len(windows), 4)
    n = batch.batch.numel()
    assert out.fusion.z.shape == (n, 16)
    assert out.context.shape == (n, 32)
    assert out.mask.shape == (n,) and not out.mask.any()
    assert set(out.inputs) == set(modalities)
    probs = model.predict_proba(batch)
    assert probs.shape == (len(windows), 4)
    assert torch.allclose(probs.sum(-1), torch.ones(len(windows)), atol=1e-5)
    assert not model.training


@pytest.mark.parametrize("modalities", MODALITY_SETS)
def test_cberl_window_prediction_independent_of_batch(
        modalities: tuple[str, ...],
        conversations: dict[tuple[str, ...], list[ConversationFeatures]]) -> None:
    model = build_model(modalities, seed=1)
    config = model.config
    windows = evaluation_windows(conversations[modalities], config.past, config.future)
    together = model.predict_proba(collate(windows, config))
    alone = torch.cat([model.predict_proba(collate([w], config)) for w in windows])
    assert torch.allclose(together, alone, atol=1e-5)
    reversed_order = model.predict_proba(collate(windows[::-1], config)).flip(0)
    assert torch.allclose(together, reversed_order, atol=1e-5)
    # Not trivially constant: different windows get different predictions.
    assert not torch.allclose(together[0], together[1], atol=1e-4)


def test_cberl_prediction_depends_only_on_window_content(
        conversations: dict[tuple[str, ...], list[ConversationFeatures]]) -> None:
    model = build_model(("text", "audio"), seed=2)
    config = model.config
    conv = conversations[("text", "audio")][0]
    window = Window(conv, 1, 4, 2)
    base = model.predict_proba(collate([window], config))
    # Utterances outside [1, 4) are changed: the prediction is not.
    edited = ConversationFeatures(
        conv.conversation_id, conv.utterance_ids, ["Zed"] + conv.speakers[1:4] + ["Zed", "Zed"],
        {m: np.where(np.arange(len(conv))[:, None] % 5 == 0, 9.0, x).astype(np.float32)
         for m, x in conv.features.items()}, conv.present, conv.labels)
    assert torch.allclose(base, model.predict_proba(collate([Window(edited, 1, 4, 2)], config)),
                          atol=1e-6)
    # Extending the window does change it (the context is used).
    assert not torch.allclose(base, model.predict_proba(collate([Window(conv, 1, 5, 2)], config)))


def test_cberl_node_without_modalities(
        conversations: dict[tuple[str, ...], list[ConversationFeatures]]) -> None:
    model = build_model(("text", "audio", "visual"), seed=3)
    config = model.config
    conv = conversations[("text", "audio", "visual")][0]
    present = {m: p.copy() for m, p in conv.present.items()}
    features = {m: x.copy() for m, x in conv.features.items()}
    for m in present:
        present[m][2] = False
        features[m][2] = 0.0
    blank = ConversationFeatures(conv.conversation_id, conv.utterance_ids, conv.speakers,
                                 features, present, conv.labels)
    windows = evaluation_windows([blank], config.past, config.future)
    batch = collate(windows, config)
    out = model(batch)
    target = batch.target[2]
    assert torch.equal(out.fusion.mu[target], torch.zeros(16))
    probs = model.predict_proba(batch)
    assert torch.isfinite(probs).all()
    assert torch.allclose(probs.sum(-1), torch.ones(len(windows)), atol=1e-5)
    # A single node with nothing at all (no context either) is still classified.
    alone = model.predict_proba(collate([Window(blank, 2, 3, 2)], config))
    assert torch.isfinite(alone).all() and alone.shape == (1, 4)


def test_cberl_fit_standardization(
        conversations: dict[tuple[str, ...], list[ConversationFeatures]]) -> None:
    model = build_model(("text", "audio"))
    convs = conversations[("text", "audio")]
    features = {m: torch.from_numpy(np.concatenate([c.features[m] for c in convs]))
                for m in model.modalities}
    present = {m: torch.from_numpy(np.concatenate([c.present[m] for c in convs]))
               for m in model.modalities}
    model.fit_standardization(features, present)
    for m in model.modalities:
        rows = model.standardize[m](features[m][present[m]])
        assert torch.allclose(rows.mean(0), torch.zeros(rows.size(1)), atol=1e-5)
        assert torch.allclose(rows.std(0), torch.ones(rows.size(1)), atol=1e-4)


def test_cberl_train_mode_masks_and_samples(
        conversations: dict[tuple[str, ...], list[ConversationFeatures]]) -> None:
    model = build_model(("text",), mask_rate=0.5).train()
    windows = evaluation_windows(conversations[("text",)] * 4, 3, 1)
    batch = collate(windows, model.config)
    torch.manual_seed(0)
    out = model(batch)
    assert out.mask.any() and not (out.mask & batch.is_target).any()
    assert not torch.allclose(out.fusion.z, out.fusion.mu)
    assert model.training


def test_cberl_overfits_tiny_data() -> None:
    """SpeechBrain-style sanity check: the full objective can fit 4 tiny conversations."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    dims, classes = {"text": 6, "audio": 3}, 3
    convs = []
    for i in range(4):
        conv = make_conversation(rng, f"t{i}", 6, dims, classes, present_rate=0.5)
        conv.labels = conv.features["text"][:, :classes].argmax(1).astype(np.int64)
        convs.append(conv)
    config = small_config(dims, num_classes=classes, latent_dim=32, fusion_hidden=32,
                          lstm_hidden=16, gat_heads=2, ensemble_members=2, ensemble_hidden=16,
                          dropout=0.0, past=2, future=1)
    model = CBERL(config)
    trainer = Trainer(model, FocalLoss(gamma=2.0), ObjectiveWeights(), lr=3e-3,
                      weight_decay=0.0, device=torch.device("cpu"),
                      labels=("a", "b", "c"))
    batch = collate(evaluation_windows(convs, config.past, config.future), config)
    with torch.no_grad():
        _, initial = trainer.compute_objectives(trainer.compute_forward(batch, Stage.VALID),
                                                batch, Stage.VALID)
    for _ in range(150):
        out = trainer.compute_forward(batch, Stage.TRAIN)
        loss, parts = trainer.compute_objectives(out, batch, Stage.TRAIN)
        assert math.isfinite(loss.item()), parts
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()
    with torch.no_grad():
        _, final = trainer.compute_objectives(trainer.compute_forward(batch, Stage.VALID),
                                              batch, Stage.VALID)
    assert set(final) == {"loss", "focal", "masked_rec", "vae_rec", "kl"}
    assert final["focal"] < 0.1 * initial["focal"], (initial, final)
    accuracy = (model.predict_proba(batch).argmax(1) == batch.labels).float().mean().item()
    assert accuracy == 1.0


def test_masked_reconstruction_masks_targets_at_their_own_rate() -> None:
    torch.manual_seed(0)
    rec = MaskedReconstruction(4, 4, {"text": 3}, mask_rate=0.0, target_mask_rate=0.5).train()
    targets = torch.arange(2000) % 2 == 0
    _, mask = rec.mask(torch.randn(2000, 4), targets)
    assert not mask[~targets].any()
    assert 0.4 < mask[targets].float().mean().item() < 0.6
    with pytest.raises(ValueError, match="target_mask_rate"):
        MaskedReconstruction(4, 4, {"text": 3}, target_mask_rate=1.0)
