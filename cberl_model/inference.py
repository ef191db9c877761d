"""Incremental inference: one utterance at a time, with rolling (revised) labels.

The recognizer holds no conversation state; a :class:`CallState` value goes in and comes
out, so the workers can keep it in Redis and any worker can continue any call.

Rolling semantics (DESIGN.md): with past window ``p`` and future window ``f``, when
utterance ``t`` arrives the labels of utterances ``t - f .. t`` are (re)computed, each from
the window ``[i - p, t]``. Utterance ``t`` is emitted at revision 0 (past-only context),
utterance ``t - k`` at revision ``k``; an utterance is final once it has ``f`` successors
or the call ends. The state keeps only the last ``p + f`` utterances, so the cost of an
update does not grow with the call. Final labels equal :meth:`EmotionRecognizer.
predict_conversation`, which runs the same windows in one batch.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cberl_model.artifact import ModelArtifact, load_artifact
from cberl_model.features.corpus_features import TEXT_ENCODER
from cberl_model.predict import predict_windows
from cberl_model.runtime import select_device
from cberl_model.windows import ConversationFeatures, Window, window_bounds


class FeatureError(ValueError):
    """Features handed to the recognizer do not fit the model's feature spec."""


@dataclass
class NodeState:
    """One remembered utterance of a call."""

    utterance_id: str
    index: int
    speaker: str
    features: dict[str, np.ndarray]
    revision: int = -1
    final: bool = False


@dataclass
class CallState:
    """Everything the recognizer needs to continue a call; JSON-serialisable.

    Attributes:
        call_id: The call.
        count: Utterances added so far (the next utterance's index).
        nodes: The last ``past + future`` utterances, oldest first.
        ended: Whether :meth:`EmotionRecognizer.end_call` ran.
    """

    call_id: str
    count: int = 0
    nodes: list[NodeState] = field(default_factory=list)
    ended: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; vectors are base64 float32 (compact, exact)."""
        return {
            "call_id": self.call_id, "count": self.count, "ended": self.ended,
            "nodes": [{
                "utterance_id": n.utterance_id, "index": n.index, "speaker": n.speaker,
                "revision": n.revision, "final": n.final,
                "features": {m: base64.b64encode(v.astype("<f4").tobytes()).decode()
                             for m, v in n.features.items()},
            } for n in self.nodes],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallState:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: If ``data`` is not a state this code wrote (corrupt or foreign).
        """
        try:
            return cls._from_dict(data)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise ValueError(f"invalid call state: {type(exc).__name__}: {exc}") from exc

    @classmethod
    def _from_dict(cls, data: dict[str, Any]) -> CallState:
        nodes = [NodeState(
            utterance_id=n["utterance_id"], index=n["index"], speaker=n["speaker"],
            revision=n["revision"], final=n["final"],
            features={m: np.frombuffer(base64.b64decode(v), dtype="<f4").copy()
                      for m, v in n["features"].items()},
        ) for n in data["nodes"]]
        return cls(call_id=data["call_id"], count=data["count"], nodes=nodes,
                   ended=data["ended"])


@dataclass(frozen=True)
class UtteranceInput:
    """An utterance to add: text and/or pre-computed features per modality."""

    utterance_id: str
    speaker: str
    text: str | None = None
    features: dict[str, Sequence[float] | np.ndarray | None] = field(default_factory=dict)


@dataclass(frozen=True)
class LabelUpdate:
    """A label emitted for an utterance (new at revision 0, or revised)."""

    utterance_id: str
    index: int
    speaker: str
    label: str
    scores: dict[str, float]
    revision: int
    final: bool


class EmotionRecognizer:
    """Runs a trained CBERL model on live conversations, one utterance at a time.

    Args:
        artifact: A loaded model (see :func:`cberl_model.artifact.load_artifact`).
    """

    def __init__(self, artifact: ModelArtifact) -> None:
        self.artifact = artifact
        self.model = artifact.model.eval()
        self.device = next(self.model.parameters()).device
        self.past = self.model.config.past
        self.future = self.model.config.future

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "auto") -> EmotionRecognizer:
        """Load a model directory (default: the bundled MELD model); CUDA when present."""
        return cls(load_artifact(path, select_device(device)))

    @property
    def labels(self) -> tuple[str, ...]:
        return self.artifact.labels

    @property
    def model_id(self) -> str:
        return self.artifact.model_id

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.model_id}, labels={len(self.labels)}, "
                f"past={self.past}, future={self.future})")

    # -- features ---------------------------------------------------------------------
    def featurize(self, items: Sequence[UtteranceInput]) -> list[dict[str, np.ndarray]]:
        """Per-modality vectors for each input, encoding text where no vector was given.

        Raises:
            FeatureError: On a modality the model does not know, or a wrong dimension.
        """
        spec = self.artifact.feature_spec
        out: list[dict[str, np.ndarray]] = []
        to_encode: list[tuple[int, str]] = []
        for i, item in enumerate(items):
            vectors: dict[str, np.ndarray] = {}
            for m, value in item.features.items():
                if value is None:
                    continue
                if m not in spec:
                    raise FeatureError(f"utterance {item.utterance_id}: the model has no {m!r} "
                                       f"modality (it uses {', '.join(spec)})")
                vec = np.asarray(value, dtype=np.float32)
                if vec.shape != (spec[m].dim,):
                    raise FeatureError(f"utterance {item.utterance_id}: {m} features have shape "
                                       f"{vec.shape}, the model expects ({spec[m].dim},)")
                if not np.isfinite(vec).all():
                    raise FeatureError(f"utterance {item.utterance_id}: {m} features are not finite")
                vectors[m] = vec
            text_spec = spec.get("text")
            if "text" not in vectors and item.text and text_spec is not None \
                    and text_spec.extractor == TEXT_ENCODER:
                to_encode.append((i, item.text))
            out.append(vectors)
        if to_encode:
            encoder = self.artifact.encoder
            assert encoder is not None  # load_artifact guarantees it for text-encoder specs
            with torch.inference_mode():
                encoded = encoder.encode([t for _, t in to_encode])
            for (i, _), vec in zip(to_encode, encoded, strict=True):
                out[i]["text"] = vec
        return out

    # -- incremental ------------------------------------------------------------------
    def open_call(self, call_id: str) -> CallState:
        """A fresh state for a new call."""
        return CallState(call_id=call_id)

    def add_utterance(self, state: CallState,
                      utterance: UtteranceInput) -> tuple[CallState, list[LabelUpdate]]:
        """Add one utterance; returns the new state and the labels to emit."""
        return self.add_utterances([(state, utterance)])[0]

    def add_utterances(self, items: Sequence[tuple[CallState, UtteranceInput]]
                       ) -> list[tuple[CallState, list[LabelUpdate]]]:
        """Add one utterance to each of several calls, in one batched forward pass.

        This is what a worker calls on a micro-batch of events. A call may appear more than
        once; its utterances are applied in order. An utterance id the state already holds
        is ignored (idempotent redelivery), as is anything added after the call ended.
        """
        features = self.featurize([u for _, u in items])
        results: list[tuple[CallState, list[LabelUpdate]] | None] = [None] * len(items)
        latest: dict[str, CallState] = {}
        pending = list(range(len(items)))
        while pending:
            # One round takes each call at most once, so its windows see earlier rounds.
            round_items, seen, later = [], set(), []
            for k in pending:
                state = latest.get(items[k][0].call_id, items[k][0])
                if state.call_id in seen:
                    later.append(k)
                    continue
                seen.add(state.call_id)
                round_items.append((k, state))
            targets: list[tuple[int, CallState, list[int]]] = []
            for k, state in round_items:
                utterance = items[k][1]
                if state.ended or any(n.utterance_id == utterance.utterance_id for n in state.nodes):
                    results[k] = (state, [])
                    latest[state.call_id] = state
                    continue
                state = _appended(state, utterance, features[k])
                latest[state.call_id] = state
                newest = state.count - 1
                targets.append((k, state, list(range(max(0, newest - self.future), newest + 1))))
            for (k, state, _), updates in zip(targets, self._label(
                    [(s, idx) for _, s, idx in targets], closing=False), strict=True):
                results[k] = (_trimmed(state, self.past + self.future), updates)
            pending = later
        return [r for r in results if r is not None]

    def end_call(self, state: CallState) -> tuple[CallState, list[LabelUpdate]]:
        """Finalise every utterance that is not final yet (the call is over)."""
        if state.ended:
            return state, []
        state = CallState(call_id=state.call_id, count=state.count,
                          nodes=[replace(n) for n in state.nodes], ended=True)
        open_indices = [n.index for n in state.nodes if not n.final]
        (updates,) = self._label([(state, open_indices)], closing=True) if open_indices else ([],)
        return state, updates

    def _label(self, requests: Sequence[tuple[CallState, list[int]]],
               closing: bool) -> list[list[LabelUpdate]]:
        """Run the windows of the given (state, utterance indices) pairs in one batch."""
        windows: list[Window] = []
        owners: list[tuple[int, NodeState]] = []
        for r, (state, indices) in enumerate(requests):
            conv = _as_conversation(state, self.artifact.feature_spec)
            first = state.nodes[0].index if state.nodes else 0
            for i in indices:
                start, end = window_bounds(i, state.count, self.past, self.future)
                if start < first:
                    raise RuntimeError(f"call {state.call_id}: window of utterance {i} needs "
                                       f"utterance {start}, which the state no longer holds")
                windows.append(Window(conv, start - first, end - first, i - first))
                owners.append((r, state.nodes[i - first]))
        probs = predict_windows(self.model, windows, self.device) if windows else []
        out: list[list[LabelUpdate]] = [[] for _ in requests]
        for (r, node), p in zip(owners, probs, strict=True):
            state = requests[r][0]
            node.revision += 1
            node.final = closing or state.count - 1 - node.index >= self.future
            out[r].append(self._update(node, p, node.revision, node.final))
        return out

    def _update(self, node: NodeState, probs: np.ndarray, revision: int,
                final: bool) -> LabelUpdate:
        return LabelUpdate(
            utterance_id=node.utterance_id, index=node.index, speaker=node.speaker,
            label=self.labels[int(np.argmax(probs))],
            scores={label: float(v) for label, v in zip(self.labels, probs, strict=True)},
            revision=revision, final=final)

    # -- batch ------------------------------------------------------------------------
    def predict_conversation(self, utterances: Sequence[UtteranceInput]) -> list[LabelUpdate]:
        """Final labels of a whole conversation at once (same windows as the rolling path)."""
        state = self.open_call("batch")
        features = self.featurize(utterances)
        for utterance, vectors in zip(utterances, features, strict=True):
            state = _appended(state, utterance, vectors)
        conv = _as_conversation(state, self.artifact.feature_spec)
        windows = [Window(conv, *window_bounds(i, state.count, self.past, self.future), i)
                   for i in range(state.count)]
        probs = predict_windows(self.model, windows, self.device)
        return [self._update(node, p, revision=0, final=True)
                for node, p in zip(state.nodes, probs, strict=True)]


def _appended(state: CallState, utterance: UtteranceInput,
              features: dict[str, np.ndarray]) -> CallState:
    node = NodeState(utterance_id=utterance.utterance_id, index=state.count,
                     speaker=utterance.speaker, features=features)
    # Copy the nodes: labelling bumps revisions, and the caller's state must not change.
    return CallState(call_id=state.call_id, count=state.count + 1,
                     nodes=[*(replace(n) for n in state.nodes), node], ended=state.ended)


def _trimmed(state: CallState, keep: int) -> CallState:
    return CallState(call_id=state.call_id, count=state.count, nodes=state.nodes[-keep:],
                     ended=state.ended)


def _as_conversation(state: CallState, spec: dict) -> ConversationFeatures:
    """The remembered nodes as the matrices the model batches (zeros where absent)."""
    n = len(state.nodes)
    feats = {m: np.zeros((n, s.dim), dtype=np.float32) for m, s in spec.items()}
    present = {m: np.zeros(n, dtype=bool) for m in spec}
    for row, node in enumerate(state.nodes):
        for m, vec in node.features.items():
            feats[m][row], present[m][row] = vec, True
    return ConversationFeatures(
        conversation_id=state.call_id, utterance_ids=[x.utterance_id for x in state.nodes],
        speakers=[x.speaker for x in state.nodes], features=feats, present=present,
        labels=np.full(n, -1, dtype=np.int64))
