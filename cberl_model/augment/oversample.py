"""Random oversampling of minority utterances, the simplest data-level baseline."""

from __future__ import annotations

import numpy as np

from cberl_model.augment.placement import (
    UtteranceIndex,
    choose_hosts,
    class_deficits,
    place_synthetic,
)
from cberl_model.windows import ConversationFeatures


def oversample_augment(conversations: list[ConversationFeatures], num_classes: int, ratio: float,
                       rng: np.random.Generator) -> list[ConversationFeatures]:
    """Repeat minority utterances, each in its own conversation, up to ``ratio * max count``.

    A repeated utterance is its host's copy with unchanged features, so it adds one more
    training window on that utterance (with a fresh future truncation each epoch) - what
    oversampling means for a context model.
    """
    index = UtteranceIndex.of(conversations)
    hosts, classes = choose_hosts(index, class_deficits(index.label, num_classes, ratio), rng)
    feats, _ = index.features(conversations)
    return place_synthetic(conversations, index, hosts, classes,
                           {m: x[hosts] for m, x in feats.items()})
