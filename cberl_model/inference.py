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

Names: an utterance's position in its call is its ``seq`` (the Utterance event's, when the
caller passes it; else the next position), the position the call expects next is
``next_seq``, and the participant is ``speaker_id``, as in the events. Windows count the
utterances the state holds, so a seq the caller skipped leaves no hole in the context.
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
from cberl_model.framing import frame, pack_vectors, unframe, unpack_vectors
from cberl_model.predict import predict_spans, predict_windows
from cberl_model.runtime import select_device, select_precision
from cberl_model.windows import ConversationFeatures, NodeTable, Window, window_bounds


class FeatureError(ValueError):
    """Features handed to the recognizer do not fit the model's feature spec."""


@dataclass
class NodeState:
    """One remembered utterance of a call.

    Attributes:
        utterance_id: The utterance.
        seq: Its position in the call (the Utterance event's ``seq``).
        speaker_id: The participant who spoke it.
        features: Its vector per modality.
        revision: The last revision emitted for it (-1: none yet).
        final: Whether its final label was emitted.
    """

    utterance_id: str
    seq: int
    speaker_id: str
    features: dict[str, np.ndarray]
    revision: int = -1
    final: bool = False


@dataclass
class CallState:
    """Everything the recognizer needs to continue a call; JSON-serialisable.

    Attributes:
        call_id: The call.
        next_seq: The seq an utterance added without one gets: one past the last added.
        nodes: The last ``past + future`` utterances, oldest first.
        ended: Whether :meth:`EmotionRecognizer.end_call` ran.
    """

    call_id: str
    next_seq: int = 0
    nodes: list[NodeState] = field(default_factory=list)
    ended: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; vectors are base64 float32 (compact, exact)."""
        return {
            "call_id": self.call_id, "next_seq": self.next_seq, "ended": self.ended,
            "nodes": [{
                "utterance_id": n.utterance_id, "seq": n.seq, "speaker_id": n.speaker_id,
                "revision": n.revision, "final": n.final,
                "features": {m: base64.b64encode(v.astype("<f4").tobytes()).decode()
                             for m, v in n.features.items()},
            } for n in self.nodes],
        }

    def to_bytes(self) -> bytes:
        """The compact binary form: a versioned header, then every vector as float32.

        Layout: ``b"CBST"``, a version byte, the header's length (uint32 LE), the header
        (JSON: call id, ``next_seq``, ``ended``, per node its id, seq, speaker, revision,
        final and the dimension of each modality), then the vectors, little-endian float32,
        node by node in header order. About ``4 * dim`` bytes per node plus ~60 of header.
        """
        return state_to_bytes(self)

    @classmethod
    def from_bytes(cls, raw: bytes | memoryview) -> CallState:
        """Inverse of :meth:`to_bytes`.

        Raises:
            ValueError: If ``raw`` is not a binary state this code wrote (corrupt or foreign).
        """
        return state_from_bytes(raw)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallState:
        """Inverse of :meth:`to_dict`; also reads the form written before the renames.

        States live in Redis across upgrades: a node's ``index`` / ``speaker`` and the
        state's ``count`` (the old names of ``seq``, ``speaker_id`` and ``next_seq``) are
        read as well.

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
            utterance_id=n["utterance_id"], seq=_renamed(n, "seq", "index"),
            speaker_id=_renamed(n, "speaker_id", "speaker"), revision=n["revision"],
            final=n["final"],
            features={m: np.frombuffer(base64.b64decode(v), dtype="<f4").copy()
                      for m, v in n["features"].items()},
        ) for n in data["nodes"]]
        return cls(call_id=data["call_id"], next_seq=_renamed(data, "next_seq", "count"),
                   nodes=nodes, ended=data["ended"])


STATE_MAGIC = b"CBST"
STATE_VERSION = 1


def state_to_bytes(state: CallState) -> bytes:
    """The compact binary form of ``state`` (see :meth:`CallState.to_bytes`)."""
    sizes, blob = pack_vectors([n.features for n in state.nodes])
    return frame(STATE_MAGIC, STATE_VERSION, {
        "call_id": state.call_id, "next_seq": state.next_seq, "ended": state.ended,
        "nodes": [[n.utterance_id, n.seq, n.speaker_id, n.revision, n.final, dims]
                  for n, dims in zip(state.nodes, sizes, strict=True)]}, blob)


def state_from_bytes(raw: bytes | memoryview) -> CallState:
    """Inverse of :func:`state_to_bytes`.

    Raises:
        ValueError: If ``raw`` is not a binary state this code wrote (corrupt or foreign).
    """
    head, payload = unframe(raw, STATE_MAGIC, STATE_VERSION, "call state")
    try:
        rows = head["nodes"]
        vectors = unpack_vectors([row[5] for row in rows], payload)
        nodes = [NodeState(str(utterance_id), int(seq), str(speaker_id), features, int(revision),
                           bool(final))
                 for (utterance_id, seq, speaker_id, revision, final, _), features
                 in zip(rows, vectors, strict=True)]
        return CallState(call_id=str(head["call_id"]), next_seq=int(head["next_seq"]), nodes=nodes,
                         ended=bool(head["ended"]))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise ValueError(f"invalid call state: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class UtteranceInput:
    """An utterance to add: text and/or pre-computed features per modality.

    Attributes:
        utterance_id: The utterance (an id the state holds is ignored: redelivery).
        speaker_id: The participant who spoke it.
        text: Its transcript (encoded when no ``text`` vector is given).
        features: Pre-computed vectors per modality (``None``: absent).
        seq: Its position in the call (the Utterance event's ``seq``); ``None``: the call's
            ``next_seq``. Seqs increase; a gap (a seq never added) is allowed.
    """

    utterance_id: str
    speaker_id: str
    text: str | None = None
    features: dict[str, Sequence[float] | np.ndarray | None] = field(default_factory=dict)
    seq: int | None = None


@dataclass(frozen=True)
class LabelUpdate:
    """A label emitted for an utterance (new at revision 0, or revised)."""

    utterance_id: str
    seq: int
    speaker_id: str
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
    def load(cls, path: str | Path | None = None, device: str = "auto",
             defer_encoder: bool = False, precision: str = "auto") -> EmotionRecognizer:
        """Load a model directory (default: the bundled MELD model); CUDA when present.

        ``defer_encoder``: see :func:`~cberl_model.artifact.load_artifact` (what a worker
        uses: it encodes text only for an event that came without its vector).
        ``precision``: the text encoder's, see :func:`~cberl_model.runtime.select_precision`.
        """
        target = select_device(device)
        return cls(load_artifact(path, target, defer_encoder, select_precision(precision, target)))

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
            encoder = self.artifact.text_encoder()
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

    def add_utterances(self, items: Sequence[tuple[CallState, UtteranceInput]],
                       featurized: Sequence[dict[str, np.ndarray]] | None = None,
                       ) -> list[tuple[CallState, list[LabelUpdate]]]:
        """Add one utterance to each of several calls, in one batched forward pass.

        This is what a worker calls on a micro-batch of events. A call may appear more than
        once; its utterances are applied in order. An utterance id the state already holds
        is ignored (idempotent redelivery), as is anything added after the call ended.

        Args:
            items: ``(state, utterance)`` pairs.
            featurized: What :meth:`featurize` returned for these utterances, when the
                caller already validated them (a worker does, to reject one bad record
                alone); then the utterances' own ``features`` and ``text`` are not read.
        """
        if featurized is not None and len(featurized) != len(items):
            raise ValueError(f"{len(featurized)} featurized vectors for {len(items)} utterances")
        features = list(featurized) if featurized is not None else self.featurize([u for _, u in items])
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
                newest = len(state.nodes) - 1
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
        state = CallState(call_id=state.call_id, next_seq=state.next_seq,
                          nodes=[replace(n) for n in state.nodes], ended=True)
        open_rows = [row for row, n in enumerate(state.nodes) if not n.final]
        (updates,) = self._label([(state, open_rows)], closing=True) if open_rows else ([],)
        return state, updates

    def _label(self, requests: Sequence[tuple[CallState, list[int]]],
               closing: bool) -> list[list[LabelUpdate]]:
        """Run the windows of the given (state, node rows) pairs in one forward pass.

        Rows index ``state.nodes``. A row's window starts ``past`` rows earlier: the state
        holds ``past + future`` nodes and only the newest ``future + 1`` are labelled, so a
        window never needs a node the state has dropped. Every state's nodes go into one
        node table and the windows are spans of it (:meth:`WindowBatch.from_spans`).
        """
        states = [state for state, _ in requests]
        sizes = np.array([len(s.nodes) for s in states], dtype=np.int64)
        counts = np.array([len(rows) for _, rows in requests], dtype=np.int64)
        if not counts.sum():
            return [[] for _ in requests]
        table = _node_table(states, self.artifact.feature_spec, self.device)
        # Window bounds of every requested row, in table coordinates (vectorised).
        rows = np.concatenate([np.asarray(r, dtype=np.int64) for _, r in requests])
        base = np.repeat(np.cumsum(sizes) - sizes, counts)
        known = np.repeat(sizes, counts)
        starts = base + np.maximum(0, rows - self.past)
        ends = base + np.minimum(known, rows + self.future + 1)
        probs = predict_spans(self.model, table, starts, ends, base + rows, self.device)
        finals = closing | (known - 1 - rows >= self.future)
        out: list[list[LabelUpdate]] = [[] for _ in requests]
        owners = np.repeat(np.arange(len(requests)), counts)
        for r, row, final, p in zip(owners.tolist(), rows.tolist(), finals.tolist(), probs,
                                    strict=True):
            node = states[r].nodes[row]
            node.revision += 1
            node.final = final
            out[r].append(self._update(node, p, node.revision, node.final))
        return out

    def _update(self, node: NodeState, probs: np.ndarray, revision: int,
                final: bool) -> LabelUpdate:
        return LabelUpdate(
            utterance_id=node.utterance_id, seq=node.seq, speaker_id=node.speaker_id,
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
        known = len(state.nodes)
        windows = [Window(conv, *window_bounds(i, known, self.past, self.future), i)
                   for i in range(known)]
        probs = predict_windows(self.model, windows, self.device)
        return [self._update(node, p, revision=0, final=True)
                for node, p in zip(state.nodes, probs, strict=True)]


def _appended(state: CallState, utterance: UtteranceInput,
              features: dict[str, np.ndarray]) -> CallState:
    seq = state.next_seq if utterance.seq is None else utterance.seq
    if seq < state.next_seq:
        raise ValueError(f"call {state.call_id}: utterance {utterance.utterance_id} has seq {seq}, "
                         f"but seqs up to {state.next_seq - 1} were added already")
    node = NodeState(utterance_id=utterance.utterance_id, seq=seq,
                     speaker_id=utterance.speaker_id, features=features)
    # Copy the nodes: labelling bumps revisions, and the caller's state must not change.
    return CallState(call_id=state.call_id, next_seq=seq + 1,
                     nodes=[*(replace(n) for n in state.nodes), node], ended=state.ended)


def _trimmed(state: CallState, keep: int) -> CallState:
    return CallState(call_id=state.call_id, next_seq=state.next_seq, nodes=state.nodes[-keep:],
                     ended=state.ended)


def _renamed(data: dict[str, Any], key: str, old_key: str) -> Any:
    """``data[key]``, or ``data[old_key]`` in a state written before the rename."""
    return data[key] if key in data else data[old_key]


def _node_table(states: Sequence[CallState], spec: dict, device: torch.device) -> NodeTable:
    """Every node of ``states``, in order, as one table on ``device`` (zeros where absent)."""
    nodes = [n for s in states for n in s.nodes]
    feats = {m: np.zeros((len(nodes), s.dim), dtype=np.float32) for m, s in spec.items()}
    present = {m: np.zeros(len(nodes), dtype=bool) for m in spec}
    for row, node in enumerate(nodes):
        for m, vec in node.features.items():
            feats[m][row], present[m][row] = vec, True
    speaker_ids: dict[tuple[int, str], int] = {}
    speakers = [speaker_ids.setdefault((k, n.speaker_id), len(speaker_ids))
                for k, s in enumerate(states) for n in s.nodes]
    return NodeTable(
        features={m: torch.from_numpy(v).to(device) for m, v in feats.items()},
        present={m: torch.from_numpy(v).to(device) for m, v in present.items()},
        speakers=torch.tensor(speakers, dtype=torch.long, device=device))


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
        speakers=[x.speaker_id for x in state.nodes], features=feats, present=present,
        labels=np.full(n, -1, dtype=np.int64))
