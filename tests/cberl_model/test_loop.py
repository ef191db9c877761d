"""The training loop (``cberl_model/train/loop.py``): its output when stderr is a log file."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import torch

from cberl_model.nn import CBERL, FocalLoss
from cberl_model.train.loop import ObjectiveWeights, Trainer
from cberl_model.windows import evaluation_windows, training_windows
from tests.cberl_model.nn_helpers import make_conversation, small_config

pytestmark = pytest.mark.usefixtures("single_thread")


def test_fit_with_stderr_redirected_logs_one_line_per_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m cberl_model.train > log 2>&1``: no bar, no carriage return, a line an epoch."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    dims = {"text": 6}
    convs = [make_conversation(rng, f"c{i}", 8, dims, 3) for i in range(4)]
    config = small_config(dims, num_classes=3)
    trainer = Trainer(CBERL(config), FocalLoss(0.0), ObjectiveWeights(), lr=1e-3,
                      weight_decay=0.0, device=torch.device("cpu"), labels=("a", "b", "c"))
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        trainer.fit(lambda epoch: training_windows(convs, config.past, config.future, 0.5, rng),
                    evaluation_windows(convs[:2], config.past, config.future), epochs=3,
                    patience=10, batch_size=4, rng=rng, progress=True)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 1", "epoch 2", "epoch 3"], text
