"""Per-call ordering rules (pure): duplicates, reordering, gaps, the end of a call."""

from __future__ import annotations

import tracemalloc
from typing import Any

from cberl_model.inference import CallState
from tests.factories import call_ended, utterance
from workers.messages import Utterance
from workers.sequencing import admit, was_skipped
from workers.state import SKIPPED_KEPT, CallRecord


def utt(seq: int, **overrides: Any) -> Utterance:
    return Utterance.of(utterance(seq, call_id="c1", **overrides))


def fresh() -> CallRecord:
    return CallRecord(state=CallState(call_id="c1"))


def seqs(events: list[Utterance]) -> list[int]:
    return [e.seq for e in events]


def test_in_order_and_duplicates() -> None:
    record = fresh()
    out = admit(record, [utt(0), utt(1), utt(1)], now_ms=0, gap_timeout_s=5, max_pending=8)
    assert seqs(out.ready) == [0, 1] and out.duplicates == 1 and record.next_seq == 2
    again = admit(record, [utt(0), utt(1)], now_ms=1, gap_timeout_s=5, max_pending=8)
    assert again.ready == [] and again.duplicates == 2 and again.late == []


def test_reordered_utterances_wait_for_the_gap() -> None:
    record = fresh()
    out = admit(record, [utt(0), utt(2), utt(3)], now_ms=1000, gap_timeout_s=5, max_pending=8)
    assert seqs(out.ready) == [0] and sorted(record.pending) == [2, 3]
    assert record.waiting_since_ms == 1000
    out = admit(record, [utt(1)], now_ms=2000, gap_timeout_s=5, max_pending=8)
    assert seqs(out.ready) == [1, 2, 3] and record.pending == {} and record.waiting_since_ms is None


def test_gap_is_skipped_after_timeout_and_late_arrival_is_reported() -> None:
    record = fresh()
    admit(record, [utt(0), utt(3)], now_ms=0, gap_timeout_s=5, max_pending=8)
    still = admit(record, [utt(4)], now_ms=4000, gap_timeout_s=5, max_pending=8)
    assert still.ready == [] and still.skipped == []
    out = admit(record, [utt(5)], now_ms=5000, gap_timeout_s=5, max_pending=8)
    assert out.skipped == [(1, 3)] and seqs(out.ready) == [3, 4, 5] and record.next_seq == 6
    late = admit(record, [utt(2)], now_ms=6000, gap_timeout_s=5, max_pending=8)
    assert [(e.seq, reason) for e, reason, _ in late.late] == [(2, "late")] and late.duplicates == 0


def test_too_many_held_utterances_skip_the_gap() -> None:
    record = fresh()
    out = admit(record, [utt(s) for s in (1, 2, 3)], now_ms=0, gap_timeout_s=60, max_pending=2)
    assert out.skipped == [(0, 1)] and seqs(out.ready) == [1, 2, 3]


def test_call_end_finalises_once_everything_is_applied() -> None:
    record = fresh()
    out = admit(record, [utt(0), call_ended("c1", 1)], now_ms=0, gap_timeout_s=5,
                max_pending=8)
    assert out.finalize and out.skipped == [(1, 2)], "a CallEnded comes after every utterance of its call"
    record.state.ended = True
    after = admit(record, [utt(7), call_ended("c1", 1)], now_ms=1, gap_timeout_s=5,
                  max_pending=8)
    assert not after.finalize and after.duplicates == 1
    assert [(e.seq, reason) for e, reason, _ in after.late] == [(7, "after_call_end")]


def test_call_end_with_held_utterances_applies_them() -> None:
    record = fresh()
    out = admit(record, [utt(0), utt(2), call_ended("c1", 2)], now_ms=0,
                gap_timeout_s=60, max_pending=8)
    assert seqs(out.ready) == [0, 2] and out.skipped == [(1, 2)] and out.finalize


def test_huge_gap_costs_constant_memory() -> None:
    """A CallEnded with last_seq 1e9 after seq 0: the gap is one range, not a billion seqs."""
    record = fresh()
    tracemalloc.start()
    try:
        out = admit(record, [utt(0), call_ended("c1", 10**9)], now_ms=0, gap_timeout_s=5,
                    max_pending=8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.finalize and out.skipped == [(1, 10**9 + 1)] and out.skipped_count == 10**9
    assert peak < 1_000_000, f"peak {peak} bytes"
    assert record.skipped == [(1, 10**9 + 1)] and was_skipped(record, 5 * 10**8)
    late = admit(record, [utt(7)], now_ms=1, gap_timeout_s=5, max_pending=8)
    assert [reason for _, reason, _ in late.late] == ["late"]
    many = fresh()
    for k in range(SKIPPED_KEPT + 10):
        admit(many, [utt(2 * k + 1)], now_ms=k * 10_000, gap_timeout_s=5, max_pending=0)
    assert len(many.skipped) == SKIPPED_KEPT


def test_duplicate_utterance_id_is_dead_lettered_and_keeps_its_seq_open() -> None:
    record = fresh()
    admit(record, [utt(0), utt(1)], now_ms=0, gap_timeout_s=5, max_pending=8)
    record.state.nodes = []  # what the recognizer keeps is tested elsewhere; the id is held early
    out = admit(record, [utt(3), utt(2, utterance_id="c1-u3", text="something else")], now_ms=1,
                gap_timeout_s=5, max_pending=8)
    assert [(m.seq, reason) for m, reason, _ in out.late] == [(2, "duplicate_utterance_id")]
    assert "different text" in out.late[0][2]
    assert record.next_seq == 2 and sorted(record.pending) == [3], "seq 2 stays open"
    real = admit(record, [utt(2)], now_ms=2, gap_timeout_s=5, max_pending=8)
    assert seqs(real.ready) == [2, 3] and real.late == []
