"""Stage 1, the encoder's LoRA adaptation, in float32 and under bfloat16 autocast."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from cberl_model.data import Conversation, Corpus, Utterance
from cberl_model.encoder_finetune import FinetuneConfig, finetune_encoder, head_logits
from cberl_model.features.corpus_features import corpus_spec, featurize_corpus
from cberl_model.features.text_encoder import LoraSpec, TextEncoder
from cberl_model.metrics import classification_report

pytestmark = pytest.mark.usefixtures("single_thread")
LABELS = ("neutral", "joy")


def _corpus(name: str) -> Corpus:
    words = {"neutral": "the meeting is at noon", "joy": "wow this is wonderful news"}
    return Corpus(name, LABELS, [
        Conversation(f"d{c}", [Utterance(f"{c}-{i}", "A", f"{words[label]} {i}", label)
                               for i, label in enumerate(LABELS * 4)])
        for c in range(3)])


@pytest.mark.parametrize("bf16", [False, True])
def test_adaptation_trains_the_adapter_and_keeps_float32_features(tmp_path, bf16: bool):
    folder = tmp_path / "tiny"
    torch.manual_seed(0)
    bundled = TextEncoder()
    BertModel(BertConfig(vocab_size=bundled.tokenizer.vocab_size, hidden_size=32,
                         num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(folder)
    bundled.tokenizer.save_pretrained(folder)
    encoder = TextEncoder(str(folder), lora=LoraSpec(rank=2, alpha=4, dropout=0.0))
    before = {k: v.clone() for k, v in encoder.adapter_state().items()}
    result = finetune_encoder(encoder, _corpus("train"), _corpus("dev"),
                              FinetuneConfig(epochs=2, lr=5e-3, batch_size=4, bf16=bf16),
                              seed=0, device=torch.device("cpu"), progress=False)
    after = encoder.adapter_state()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(v.dtype == torch.float32 for v in after.values())
    assert len(result["history"]) == 2
    assert all(row["train_loss"] == row["train_loss"] for row in result["history"])  # not NaN
    assert encoder.encode(["wow"]).dtype.name == "float32"

    # The per-utterance baseline scored from the rows CBERL is fed reproduces the stage's
    # own dev report (cross-validation scores it that way instead of encoding twice).
    dev = _corpus("dev")
    rows = featurize_corpus(dev, corpus_spec(dev, encoder), encoder)
    logits = head_logits(result["head"], np.concatenate([f.features["text"] for f in rows]))
    labels = np.concatenate([f.labels for f in rows])
    assert logits.shape == (dev.num_utterances, len(LABELS))
    assert classification_report(labels, logits.argmax(1), LABELS) == result["dev"]
