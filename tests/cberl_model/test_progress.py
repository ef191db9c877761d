"""Progress output: a bar only on a terminal; redirected, one log line per stage."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from cberl_model.progress import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def redirected(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """stderr is a file (not a terminal), and the logs go to it, as in ``train > log 2>&1``."""
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_redirected_stderr_gets_one_line_per_epoch_and_no_carriage_return(redirected) -> None:
    for epoch in range(1, 4):
        bar = progress(range(500), f"epoch {epoch}", unit="batch")
        for _ in bar:
            bar.set_postfix(loss="0.123")
    text = redirected.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("epoch 1: 500/500 batch, loss 0.123 in ")


def test_summary_false_leaves_the_line_to_the_caller(redirected) -> None:
    for _ in progress(range(10), "epoch 1", summary=False):
        pass
    for _ in progress(range(10), "quiet", enabled=False):
        pass
    assert redirected.getvalue() == ""


def test_manual_updates_and_heartbeat_lines(redirected) -> None:
    with progress(desc="featurize media", total=4, unit="utt", interval_s=0.0) as bar:
        for _ in range(4):
            bar.update()
    lines = redirected.getvalue().splitlines()
    assert lines[:4] == [f"featurize media: {i}/4 utt so far" for i in range(1, 5)]
    assert lines[4].startswith("featurize media: 4/4 utt in ") and len(lines) == 5


def test_a_terminal_gets_the_tqdm_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    bar = progress(range(3), "epoch 1", unit="batch")
    assert "bar" in repr(bar)
    assert list(bar) == [0, 1, 2]
    assert "\r" in terminal.getvalue() and "epoch 1" in terminal.getvalue()
