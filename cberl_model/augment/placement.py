"""How synthetic minority utterances enter conversation-level training.

The context model learns from windows of real conversations, never from loose
utterances, so a synthetic utterance needs a conversation around it. The policy, shared
by every augmentation method:

1. A synthetic sample of class ``c`` is *hosted* by a real training utterance of class
   ``c``: its conversation supplies speakers, order and neighbours that really occur
   around that emotion.
2. The host conversation is **copied**; in the copy the host's feature rows are replaced
   by the synthetic sample (for the modalities the host has: the presence pattern is
   kept), and **every other utterance of the copy is unlabelled** (label ``-1``). The copy
   therefore adds exactly one training window (the synthetic target) and no duplicate
   labels of the host's neighbours, who serve as context only.
3. Originals are never modified; speakers, lengths and the speaker graph of every copy
   equal its original's. Only the training split goes through an augmentation; dev and
   test conversations are featurised after and apart from it.

How many samples each class gets is :func:`class_deficits`: every class is topped up to
``ratio`` times the largest class count (never reduced).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cberl_model.windows import ConversationFeatures


@dataclass(frozen=True)
class UtteranceIndex:
    """Flat index of the labelled utterances of a list of conversations.

    Attributes:
        conversation: Conversation index of each labelled utterance ``(U,)``.
        position: Its row inside that conversation ``(U,)``.
        label: Its class ``(U,)``.
    """

    conversation: np.ndarray
    position: np.ndarray
    label: np.ndarray

    @classmethod
    def of(cls, conversations: Sequence[ConversationFeatures]) -> UtteranceIndex:
        conv, pos, lab = [], [], []
        for c, conversation in enumerate(conversations):
            rows = np.flatnonzero(conversation.labels >= 0)
            conv.append(np.full(len(rows), c))
            pos.append(rows)
            lab.append(conversation.labels[rows])
        return cls(np.concatenate(conv).astype(np.int64), np.concatenate(pos).astype(np.int64),
                   np.concatenate(lab).astype(np.int64))

    def features(self, conversations: Sequence[ConversationFeatures]
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Feature rows ``{m: (U, d_m)}`` and presence ``{m: (U,)}`` of the indexed utterances."""
        modalities = conversations[0].features.keys()
        feats = {m: np.stack([conversations[c].features[m][p]
                              for c, p in zip(self.conversation, self.position, strict=True)])
                 for m in modalities}
        present = {m: np.array([bool(conversations[c].present[m][p])
                                for c, p in zip(self.conversation, self.position, strict=True)])
                   for m in modalities}
        return feats, present


def class_deficits(labels: np.ndarray, num_classes: int, ratio: float) -> np.ndarray:
    """Synthetic samples per class so each class has at least ``ratio * max count``.

    Classes without any real example get none: there is nothing to host or imitate.

    Raises:
        ValueError: If ``ratio`` is not in ``(0, 1]``.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"the augmentation ratio must be in (0, 1], got {ratio}.")
    counts = np.bincount(labels, minlength=num_classes)
    wanted = int(np.ceil(ratio * counts.max()))
    return np.where(counts > 0, np.maximum(0, wanted - counts), 0)


def choose_hosts(index: UtteranceIndex, deficits: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Host utterances (flat indices) and their classes for the synthetic samples.

    Each class's real utterances host in turn (a random permutation, repeated), so every
    real minority utterance hosts about the same number of synthetic ones.
    """
    hosts, classes = [], []
    for c, k in enumerate(deficits):
        if k == 0:
            continue
        members = np.flatnonzero(index.label == c)
        rounds = math.ceil(int(k) / len(members))
        order = np.concatenate([rng.permutation(members) for _ in range(rounds)])
        hosts.append(order[:k])
        classes.append(np.full(int(k), c))
    if not hosts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(hosts), np.concatenate(classes)


def place_synthetic(conversations: Sequence[ConversationFeatures], index: UtteranceIndex,
                    hosts: np.ndarray, classes: np.ndarray,
                    samples: dict[str, np.ndarray]) -> list[ConversationFeatures]:
    """The originals plus one host-conversation copy per synthetic sample (see module doc).

    Args:
        conversations: The training conversations (not modified).
        index: Their labelled-utterance index.
        hosts: Flat index (into ``index``) of each synthetic sample's host ``(S,)``.
        classes: Each synthetic sample's class ``(S,)``.
        samples: Synthetic feature rows ``{m: (S, d_m)}``; rows of modalities the host
            lacks are ignored.
    """
    out = list(conversations)
    for j, (host, label) in enumerate(zip(hosts, classes, strict=True)):
        original = conversations[index.conversation[host]]
        position = int(index.position[host])
        features = {}
        for m, matrix in original.features.items():
            features[m] = matrix.copy()
            if original.present[m][position]:
                features[m][position] = samples[m][j]
        labels = np.full(len(original), -1, dtype=original.labels.dtype)
        labels[position] = label
        out.append(ConversationFeatures(
            conversation_id=f"{original.conversation_id}#synthetic{j}",
            utterance_ids=list(original.utterance_ids), speakers=list(original.speakers),
            features=features, present={m: p.copy() for m, p in original.present.items()},
            labels=labels))
    return out
