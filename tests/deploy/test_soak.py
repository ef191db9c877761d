"""The soak benchmark's leak check compares like loads (benchmarks/soak.py)."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.soak import MAX_REPORT_BYTES, growth_at_like_load, rescore
from cberl_model.runtime import ConfigError


def _samples(fds: list[int], participants: list[int]) -> list[dict[str, Any]]:
    rows = [{"t_s": 30 * i, "procs": {"streamer": {"rss_mb": 1000.0, "fds": f}},
             "gauges": {"streamer_active_participants": p}}
            for i, (f, p) in enumerate(zip(fds, participants, strict=True))]
    return rows + [{"t_s": 30 * len(fds), "procs": {"streamer": {"rss_mb": 1000.0, "fds": 13}},
                    "gauges": {"streamer_active_participants": 0}}]


def test_descriptors_that_follow_the_participants_are_not_growth():
    participants = [3, 4, 4, 3, 4, 4, 3, 4, 4, 4]
    growth, compared_at = growth_at_like_load(
        _samples([22 + 3 * (p - 3) for p in participants], participants), warm_from_s=0)
    assert compared_at == 4
    assert growth["streamer"]["fds"]["growth_pct"] == 0.0


def test_descriptors_that_grow_at_the_same_load_are_growth():
    growth, _ = growth_at_like_load(_samples(list(range(20, 30)), [4] * 10), warm_from_s=60)
    fds = growth["streamer"]["fds"]
    assert (fds["after_warmup"], fds["end"]) == (23.0, 28.0)
    assert fds["growth_pct"] > 10


def test_rescore_refuses_what_is_not_a_soak_report(tmp_path):
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"samples": "nope"}')
    too_big = tmp_path / "big.json"
    too_big.write_bytes(b" " * (MAX_REPORT_BYTES + 1))
    for path, message in ((garbage, "not a soak report"), (too_big, "larger than"),
                          (tmp_path / "missing.json", "not a soak report")):
        with pytest.raises(ConfigError, match=message):
            rescore(path, warmup_fraction=0.25)
    assert garbage.read_text() == '{"samples": "nope"}'  # nothing rewritten
