"""The text encoder: bundled MiniLM, any local HF / sentence-transformers directory, LoRA."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from cberl_model.features.text_encoder import (
    EncoderError,
    LoraSpec,
    TextEncoder,
    resolve_model_dir,
)


@pytest.fixture(scope="module")
def bundled() -> TextEncoder:
    return TextEncoder()


def _tiny_bert(folder: Path, bundled: TextEncoder) -> Path:
    """A 2-layer, 32-wide BERT with random weights and MiniLM's tokenizer, saved locally."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=bundled.tokenizer.vocab_size, hidden_size=32,
                        num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(folder)
    bundled.tokenizer.save_pretrained(folder)
    return folder


def test_bundled_minilm_gives_384_dim_embeddings_offline(bundled):
    vectors = bundled.encode(["I can't believe you did that!", "Okay.", ""])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    # similar sentences are closer than unrelated ones: real weights, not a stub
    a, b, c = bundled.encode(["I am so happy today", "I feel very happy today", "The invoice is due"])
    cos = lambda x, y: float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))  # noqa: E731
    assert cos(a, b) > cos(a, c) + 0.2


def test_encode_keeps_input_order_despite_length_sorting(bundled):
    texts = ["a much longer sentence than the others in this batch", "hi", "medium length"]
    batched = bundled.encode(texts, batch_size=2)
    for text, vector in zip(texts, batched, strict=True):
        np.testing.assert_allclose(bundled.encode([text])[0], vector, atol=1e-5)


def test_any_hugging_face_directory_by_path(tmp_path, bundled):
    encoder = TextEncoder(str(_tiny_bert(tmp_path / "tiny", bundled)))
    assert encoder.dim == 32 and encoder.pooling == "mean"
    assert encoder.encode(["hello there"]).shape == (1, 32)
    assert encoder.feature_id() != bundled.feature_id()


def test_sentence_transformers_layout_with_cls_pooling(tmp_path, bundled):
    root = tmp_path / "st"
    _tiny_bert(root / "0_Transformer", bundled)
    (root / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_Transformer",
         "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]))
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": True,
         "pooling_mode_mean_tokens": False}))
    assert resolve_model_dir(str(root)) == root / "0_Transformer"
    encoder = TextEncoder(str(root))
    assert encoder.pooling == "cls"
    tokens = encoder.tokenize(["hello there"])
    with torch.no_grad():
        hidden = encoder.backbone(**tokens).last_hidden_state
    np.testing.assert_allclose(encoder.encode(["hello there"])[0], hidden[0, 0].numpy(), atol=1e-5)


@pytest.mark.parametrize("spec, message", [
    ("package:no_such_package_xyz", "is not installed"),
    ("/nonexistent/model", "does not exist"),
])
def test_unusable_encoder_specs_are_clear_errors(spec, message):
    with pytest.raises(EncoderError, match=message):
        TextEncoder(spec)


def test_directory_without_config_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderError, match="no config.json"):
        TextEncoder(str(tmp_path / "empty"))


def test_lora_adapter_round_trip_changes_features(tmp_path, bundled):
    spec = LoraSpec(rank=2, alpha=4, dropout=0.0)
    source = TextEncoder(str(_tiny_bert(tmp_path / "tiny", bundled)), lora=spec)
    untouched = source.feature_id()
    with torch.no_grad():
        for name, param in source.backbone.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    state = source.adapter_state()
    assert state and all("lora" in k for k in state)
    assert source.feature_id() != untouched
    target = TextEncoder(str(tmp_path / "tiny"), lora=spec)
    target.load_adapter_state(state)
    assert target.feature_id() == source.feature_id()
    np.testing.assert_allclose(target.encode(["same text"]), source.encode(["same text"]), atol=1e-6)
    plain = TextEncoder(str(tmp_path / "tiny"))
    with pytest.raises(EncoderError, match="without a LoRA adapter"):
        plain.load_adapter_state(state)


def test_copy_of_bundled_model_dir_has_same_fingerprint(tmp_path, bundled):
    copy = shutil.copytree(bundled.model_dir, tmp_path / "copy")
    assert TextEncoder(str(copy)).fingerprint == bundled.fingerprint


def test_conversation_inputs_use_past_turns_only_with_speaker_names():
    from cberl_model.features.text_encoder import conversation_inputs

    speakers, texts = ["Joey", "Ross", "Joey"], ["How you doin'?", "Don't.", "What?"]
    assert conversation_inputs(speakers, texts, 0) == (texts, None)
    current, context = conversation_inputs(speakers, texts, 2)
    assert current == ["Joey: How you doin'?", "Ross: Don't.", "Joey: What?"]
    # most recent turn first, so truncation drops the oldest; nothing from the future
    assert context == ["", "Joey: How you doin'?", "Ross: Don't. | Joey: How you doin'?"]
    _, one = conversation_inputs(speakers, texts, 1)
    assert one == ["", "Joey: How you doin'?", "Ross: Don't."]


def test_context_encoder_serving_path_matches_the_trainer_features(tmp_path, bundled):
    """encode_turns (what serving calls with the call's past turns) == featurize_corpus."""
    from cberl_model.data import Conversation, Corpus, Utterance
    from cberl_model.features.corpus_features import corpus_spec, featurize_corpus
    from cberl_model.features.text_encoder import Turn

    encoder = TextEncoder(context_turns=1)
    lines = [("Joey", "How you doin'?"), ("Ross", "Don't."), ("Joey", "What? " * 40)]
    corpus = Corpus("c", ("neutral",), [Conversation("d", [
        Utterance(f"u{i}", s, t, "neutral") for i, (s, t) in enumerate(lines)])])
    rows = featurize_corpus(corpus, corpus_spec(corpus, encoder), encoder)[0].features["text"]
    past: list[Turn] = []
    served = []
    for speaker, text in lines:
        served.append(encoder.encode_turns([(speaker, text, list(past))])[0])
        past.append(Turn(speaker, text))
    np.testing.assert_allclose(np.stack(served), rows, atol=1e-5)
    # the context changes the vector (attention sees it) but not the first utterance's
    alone = TextEncoder().encode(["Ross: Don't."])[0]
    assert not np.allclose(rows[1], alone, atol=1e-4)
    np.testing.assert_allclose(rows[0], TextEncoder().encode(["Joey: How you doin'?"])[0],
                               atol=1e-5)


def test_context_turns_are_part_of_the_feature_id_only_when_used(bundled):
    assert TextEncoder(context_turns=0).feature_id() == bundled.feature_id()
    assert TextEncoder(context_turns=1).feature_id() != bundled.feature_id()
    with pytest.raises(ValueError, match="context_turns"):
        TextEncoder(context_turns=-1)


def _adapted_tiny(folder: Path, bundled: TextEncoder) -> TextEncoder:
    """The tiny BERT with a LoRA adapter that changes its features."""
    encoder = TextEncoder(str(_tiny_bert(folder, bundled)),
                          lora=LoraSpec(rank=2, alpha=4, dropout=0.0))
    with torch.no_grad():
        for name, param in encoder.backbone.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    return encoder


def test_frozen_encoder_folds_its_adapter_in_and_keeps_its_feature_id(tmp_path, bundled):
    encoder = _adapted_tiny(tmp_path / "tiny", bundled)
    texts = ["same text", "a longer text than the first one", "ok"]
    trained, feature_id = encoder.encode(texts), encoder.feature_id()
    encoder.freeze(torch.float32)
    assert encoder.feature_id() == feature_id
    assert not any(p.requires_grad for p in encoder.parameters())
    np.testing.assert_allclose(encoder.encode(texts), trained, atol=1e-5)
    with pytest.raises(EncoderError, match="frozen"):
        encoder.adapter_state()
    with pytest.raises(EncoderError, match="frozen"):
        encoder.load_adapter_state({})


def test_bfloat16_serving_encoder_rounds_but_keeps_the_features(tmp_path, bundled):
    encoder = _adapted_tiny(tmp_path / "tiny", bundled)
    texts = ["same text", "a longer text than the first one", "ok"]
    trained, feature_id = encoder.encode(texts), encoder.feature_id()
    served = encoder.freeze(torch.bfloat16)
    assert served.dtype == torch.bfloat16 and served.feature_id() == feature_id
    vectors = served.encode(texts)
    assert vectors.dtype == np.float32 and not np.array_equal(vectors, trained)
    cosine = (vectors * trained).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(
        trained, axis=1)
    assert cosine.min() > 0.99
