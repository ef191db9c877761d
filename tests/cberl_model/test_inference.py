"""The incremental inference API on the shipped default model and real MELD dialogues."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cberl_model.data import Conversation
from cberl_model.data.meld import read_meld_csv
from cberl_model.inference import (
    CallState,
    EmotionRecognizer,
    FeatureError,
    LabelUpdate,
    UtteranceInput,
)


@pytest.fixture(scope="module")
def recognizer() -> EmotionRecognizer:
    """In float32, where the incremental path equals batch inference to 1e-5; bfloat16
    rounds differently with the padding of a batch (its own tests: test_text_encoder)."""
    return EmotionRecognizer.load(device="cpu", precision="float32")


@pytest.fixture(scope="module")
def dialogues(meld_dir: Path) -> list[Conversation]:
    """The two longest MELD dev dialogues (longer than the model's whole window)."""
    corpus = read_meld_csv(meld_dir / "dev_sent_emo.csv")
    return sorted(corpus.conversations, key=len, reverse=True)[:2]


def _inputs(conv: Conversation) -> list[UtteranceInput]:
    return [UtteranceInput(u.utterance_id, u.speaker, text=u.text) for u in conv]


def _replay(recognizer: EmotionRecognizer, conv: Conversation,
            roundtrip: bool = False) -> tuple[list[list[LabelUpdate]], CallState]:
    """Feed a dialogue one utterance at a time; optionally serialise the state between steps."""
    state = recognizer.open_call(conv.conversation_id)
    steps = []
    for utterance in _inputs(conv):
        if roundtrip:
            state = CallState.from_dict(json.loads(json.dumps(state.to_dict())))
        state, updates = recognizer.add_utterance(state, utterance)
        steps.append(updates)
    state, closing = recognizer.end_call(state)
    steps.append(closing)
    return steps, state


def _latest(steps: list[list[LabelUpdate]]) -> dict[str, LabelUpdate]:
    """A subscriber's view: the highest revision per utterance."""
    view: dict[str, LabelUpdate] = {}
    for updates in steps:
        for update in updates:
            if update.utterance_id not in view or update.revision > view[update.utterance_id].revision:
                view[update.utterance_id] = update
    return view


def test_replayed_final_labels_equal_batch_inference(recognizer, dialogues):
    for conv in dialogues:
        assert len(conv) > recognizer.past + recognizer.future
        view = _latest(_replay(recognizer, conv)[0])
        batch = recognizer.predict_conversation(_inputs(conv))
        assert [view[b.utterance_id].label for b in batch] == [b.label for b in batch]
        for b in batch:
            got = view[b.utterance_id]
            assert got.final
            np.testing.assert_allclose([got.scores[k] for k in recognizer.labels],
                                       [b.scores[k] for k in recognizer.labels], atol=1e-5)


def test_rolling_revisions_follow_the_window(recognizer, dialogues):
    conv = dialogues[0]
    steps, _ = _replay(recognizer, conv)
    f = recognizer.future
    for t, updates in enumerate(steps[:-1]):
        # utterance t at revision 0, and its f predecessors revised, oldest first
        expected = list(range(max(0, t - f), t + 1))
        assert [u.seq for u in updates] == expected
        for u in updates:
            assert u.revision == t - u.seq
            assert u.final == (t - u.seq == f)
            assert abs(sum(u.scores.values()) - 1.0) < 1e-4
    # closing finalises exactly the last f utterances, each one revision later
    closing = steps[-1]
    assert [u.seq for u in closing] == list(range(len(conv) - f, len(conv)))
    assert all(u.final for u in closing)
    revisions: dict[int, list[int]] = {}
    for updates in steps:
        for u in updates:
            revisions.setdefault(u.seq, []).append(u.revision)
    assert all(r == list(range(len(r))) for r in revisions.values()), "revisions must not skip"


def test_state_is_bounded_and_survives_serialisation(recognizer, dialogues):
    conv = dialogues[0]
    plain, state = _replay(recognizer, conv)
    assert len(state.nodes) <= recognizer.past + recognizer.future
    assert state.next_seq == len(conv) and state.ended
    serialised, _ = _replay(recognizer, conv, roundtrip=True)
    assert [[(u.utterance_id, u.revision, u.label) for u in s] for s in plain] == \
        [[(u.utterance_id, u.revision, u.label) for u in s] for s in serialised]


def test_redelivered_utterance_is_ignored(recognizer, dialogues):
    first, second = _inputs(dialogues[0])[:2]
    state, _ = recognizer.add_utterance(recognizer.open_call("c"), first)
    state, _ = recognizer.add_utterance(state, second)
    again, updates = recognizer.add_utterance(state, first)
    assert updates == [] and again.next_seq == 2
    ended, _ = recognizer.end_call(state)
    after, updates = recognizer.add_utterance(ended, _inputs(dialogues[0])[2])
    assert updates == [] and after.next_seq == 2


def test_micro_batch_across_calls_matches_one_call_at_a_time(recognizer, dialogues):
    a, b = (_inputs(conv)[:4] for conv in dialogues)
    states = {"a": recognizer.open_call("a"), "b": recognizer.open_call("b")}
    one_by_one = []
    for call, utterance in [("a", a[0]), ("b", b[0]), ("a", a[1]), ("b", b[1]), ("a", a[2])]:
        states[call], updates = recognizer.add_utterance(states[call], utterance)
        one_by_one.append(updates)
    fresh = {"a": recognizer.open_call("a"), "b": recognizer.open_call("b")}
    batched = recognizer.add_utterances([(fresh["a"], a[0]), (fresh["b"], b[0]), (fresh["a"], a[1]),
                                         (fresh["b"], b[1]), (fresh["a"], a[2])])
    assert len(batched) == 5
    for (_, got), want in zip(batched, one_by_one, strict=True):
        assert [(u.utterance_id, u.revision, u.label) for u in got] == \
            [(u.utterance_id, u.revision, u.label) for u in want]
        for g, w in zip(got, want, strict=True):
            assert g.scores == pytest.approx(w.scores, abs=1e-5)


def test_precomputed_text_features_equal_text_input(recognizer, dialogues):
    utterances = _inputs(dialogues[0])[:3]
    vectors = recognizer.featurize(utterances)
    with_vectors = [UtteranceInput(u.utterance_id, u.speaker_id, features={"text": v["text"]})
                    for u, v in zip(utterances, vectors, strict=True)]
    assert [x.label for x in recognizer.predict_conversation(utterances)] == \
        [x.label for x in recognizer.predict_conversation(with_vectors)]


def test_utterance_without_any_modality_still_gets_a_label(recognizer):
    state, updates = recognizer.add_utterance(recognizer.open_call("silent"),
                                              UtteranceInput("u0", "A"))
    assert len(updates) == 1 and updates[0].label in recognizer.labels


@pytest.mark.parametrize("case", ["wrong width", "unknown modality", "not finite"])
def test_bad_features_are_refused_with_a_clear_error(recognizer, case):
    dim = recognizer.model.config.input_dims["text"]
    features, message = {
        "wrong width": ({"text": [0.0] * 10}, f"expects ({dim},)"),
        "unknown modality": ({"smell": [0.0] * dim}, "no 'smell' modality"),
        "not finite": ({"text": [float("nan")] * dim}, "not finite"),
    }[case]
    with pytest.raises(FeatureError, match=message.replace("(", r"\(").replace(")", r"\)")):
        recognizer.add_utterance(recognizer.open_call("bad"),
                                 UtteranceInput("u0", "A", features=features))


@pytest.mark.parametrize("data", [{}, {"call_id": "c", "count": 1, "ended": False,
                                       "nodes": [{"utterance_id": "u"}]},
                                  {"call_id": "c", "count": 1, "ended": False, "nodes": [
                                      {"utterance_id": "u", "index": 0, "speaker": "A",
                                       "revision": 0, "final": False,
                                       "features": {"text": "not base64!"}}]}])
def test_corrupt_call_state_is_a_clear_error(data):
    with pytest.raises(ValueError, match="invalid call state"):
        CallState.from_dict(data)


def test_event_seqs_are_carried_and_gaps_leave_no_hole(recognizer, dialogues):
    """The caller's seqs label the updates; windows count the utterances held, not seqs."""
    inputs = _inputs(dialogues[0])[:6]
    seqs = [0, 1, 4, 5, 9, 10]  # the worker gave up on 2, 3 and 6..8
    plain_state, plain = recognizer.open_call("p"), []
    gapped_state, gapped = recognizer.open_call("g"), []
    for u, seq in zip(inputs, seqs, strict=True):
        plain_state, got = recognizer.add_utterance(plain_state, u)
        plain.append(got)
        gapped_state, got = recognizer.add_utterance(gapped_state, replace(u, seq=seq))
        gapped.append(got)
    assert gapped_state.next_seq == 11 and plain_state.next_seq == 6
    by_position = dict(enumerate(seqs))
    for want, got in zip(plain, gapped, strict=True):
        assert [by_position[u.seq] for u in want] == [u.seq for u in got]
        assert [(u.utterance_id, u.label, u.revision, u.final) for u in want] == \
            [(u.utterance_id, u.label, u.revision, u.final) for u in got]
    assert {n.seq for n in gapped_state.nodes} <= set(seqs)
    with pytest.raises(ValueError, match="has seq 3"):
        recognizer.add_utterance(gapped_state, replace(_inputs(dialogues[0])[6], seq=3))


def test_call_state_written_before_the_renames_still_loads(recognizer, dialogues):
    """States live in Redis across upgrades: the old keys index, count and speaker are read."""
    state = recognizer.open_call("old")
    for u in _inputs(dialogues[0])[:3]:
        state, _ = recognizer.add_utterance(state, u)
    new = state.to_dict()
    assert {"next_seq", "nodes"} <= set(new) and "count" not in new
    assert {"seq", "speaker_id"} <= set(new["nodes"][0]) and "index" not in new["nodes"][0]
    old = {"call_id": new["call_id"], "count": new["next_seq"], "ended": new["ended"],
           "nodes": [{"utterance_id": n["utterance_id"], "index": n["seq"],
                      "speaker": n["speaker_id"], "revision": n["revision"], "final": n["final"],
                      "features": n["features"]} for n in new["nodes"]]}
    loaded = CallState.from_dict(old)
    assert loaded.to_dict() == new
    assert [(n.seq, n.speaker_id) for n in loaded.nodes] == \
        [(n.seq, n.speaker_id) for n in state.nodes]
    nxt = _inputs(dialogues[0])[3]
    assert recognizer.add_utterance(loaded, nxt)[1] == recognizer.add_utterance(state, nxt)[1]


def test_deferred_encoder_gives_the_same_vectors_as_an_eager_load(recognizer, dialogues):
    """A worker loads the encoder in the background; text it encodes must not change."""
    deferred = EmotionRecognizer.load(device="cpu", defer_encoder=True, precision="float32")
    assert deferred.artifact.pending_encoder is not None or deferred.artifact.encoder is not None
    utterances = _inputs(dialogues[0])[:3]
    for eager, late in zip(recognizer.featurize(utterances), deferred.featurize(utterances),
                           strict=True):
        np.testing.assert_array_equal(eager["text"], late["text"])
    assert deferred.artifact.pending_encoder is None


def test_bfloat16_serving_encoder_gives_the_same_labels(recognizer, dialogues):
    """encoder_precision=bfloat16 (auto on CUDA; opt-in on a CPU) keeps every label."""
    served = EmotionRecognizer.load(device="cpu", precision="bfloat16")
    assert served.artifact.encoder.dtype == torch.bfloat16
    for conv in dialogues:
        reference = recognizer.predict_conversation(_inputs(conv))
        rounded = served.predict_conversation(_inputs(conv))
        assert [r.label for r in rounded] == [r.label for r in reference]
        np.testing.assert_allclose([[r.scores[k] for k in recognizer.labels] for r in rounded],
                                   [[r.scores[k] for k in recognizer.labels] for r in reference],
                                   atol=0.02)
