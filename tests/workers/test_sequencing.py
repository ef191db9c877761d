"""Per-call ordering rules (pure): duplicates, reordering, gaps, the end of a call."""

from __future__ import annotations

from cberl_model.inference import CallState
from contracts.events import UtteranceEvent
from tests.factories import call_ended, utterance
from workers.sequencing import admit
from workers.state import CallRecord


def utt(seq: int) -> UtteranceEvent:
    return utterance(seq, call_id="c1")


def fresh() -> CallRecord:
    return CallRecord(state=CallState(call_id="c1"))


def seqs(events: list[UtteranceEvent]) -> list[int]:
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
    assert out.skipped == [1, 2] and seqs(out.ready) == [3, 4, 5] and record.next_seq == 6
    late = admit(record, [utt(2)], now_ms=6000, gap_timeout_s=5, max_pending=8)
    assert [(e.seq, reason) for e, reason, _ in late.late] == [(2, "late")] and late.duplicates == 0


def test_too_many_held_utterances_skip_the_gap() -> None:
    record = fresh()
    out = admit(record, [utt(s) for s in (1, 2, 3)], now_ms=0, gap_timeout_s=60, max_pending=2)
    assert out.skipped == [0] and seqs(out.ready) == [1, 2, 3]


def test_call_end_finalises_once_everything_is_applied() -> None:
    record = fresh()
    out = admit(record, [utt(0), call_ended("c1", 1)], now_ms=0, gap_timeout_s=5,
                max_pending=8)
    assert out.finalize and out.skipped == [1], "a CallEnded comes after every utterance of its call"
    record.state.ended = True
    after = admit(record, [utt(7), call_ended("c1", 1)], now_ms=1, gap_timeout_s=5,
                  max_pending=8)
    assert not after.finalize and after.duplicates == 1
    assert [(e.seq, reason) for e, reason, _ in after.late] == [(7, "after_call_end")]


def test_call_end_with_held_utterances_applies_them() -> None:
    record = fresh()
    out = admit(record, [utt(0), utt(2), call_ended("c1", 2)], now_ms=0,
                gap_timeout_s=60, max_pending=8)
    assert seqs(out.ready) == [0, 2] and out.skipped == [1] and out.finalize
