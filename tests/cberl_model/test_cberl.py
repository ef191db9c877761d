"""Unit tests of the whole network, :class:`cberl_model.nn.CBERL` (``nn/cberl.py``).

PyG style (``test/nn/conv/``): tiny hand-built inputs, parametrised configs, output shapes
and ``repr``; shared inputs come from :mod:`tests.cberl_model.nn_helpers`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cberl_model.nn import (
    CBERL,
    FocalLoss,
)
from cberl_model.train.loop import ObjectiveWeights, Stage, Trainer
from cberl_model.windows import (
    ConversationFeatures,
    Window,
    WindowBatch,
    evaluation_windows,
)
from tests.cberl_model.nn_helpers import (
    ALL_DIMS,
    MODALITY_SETS,
    build_model,
    collate,
    make_conversation,
    small_config,
)

pytestmark = pytest.mark.usefixtures("single_thread")


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


@pytest.mark.parametrize("overrides", [{}, {"fusion": "concat"}, {"use_graph": False},
                                       {"gat_layers": 1}, {"gat_layers": 3}])
def test_cberl_predict_spans_equals_predict_proba(overrides: dict[str, object]) -> None:
    """The shared-work span path gives predict_proba's probabilities (live-call and odd spans)."""
    torch.manual_seed(0)
    dims = {m: ALL_DIMS[m] for m in ("text", "audio")}
    model = CBERL(small_config(dims, **overrides)).eval()
    n = 40
    features = {m: torch.randn(n, d) for m, d in dims.items()}
    present = {m: torch.rand(n) > 0.3 for m in dims}
    speakers = torch.randint(0, 3, (n,))
    # A live call's windows (same end, consecutive starts), then unrelated spans.
    starts = torch.tensor([0, 1, 2, 7, 7, 8, 12, 20, 30, 39])
    ends = torch.tensor([6, 6, 6, 8, 12, 12, 20, 26, 39, 40])
    targets = torch.tensor([3, 4, 5, 7, 10, 11, 15, 24, 36, 39])
    batch = WindowBatch.from_spans(features, present, speakers, starts, ends, targets,
                                   torch.full((n,), -1), model.config.past, model.config.future,
                                   model.config.edge_decay)
    expected = model.predict_proba(batch)
    got = model.predict_spans(features, present, speakers, starts, ends, targets)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # The folded-weight cache follows a parameter update.
    with torch.no_grad():
        model.project.weight.mul_(1.5)
    again = model.predict_spans(features, present, speakers, starts, ends, targets)
    torch.testing.assert_close(again, model.predict_proba(batch), atol=1e-5, rtol=0)
