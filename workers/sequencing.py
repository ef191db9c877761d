"""Pure per-call ordering: which utterances to apply now, hold, drop or dead-letter.

Kafka keeps a partition in order, but the streamer may redeliver (duplicates), and a lost
or rejected utterance leaves a gap. The rules, applied to a call's messages of one
micro-batch together with its stored :class:`~workers.state.CallRecord`:

- ``seq < next_seq``: already applied (duplicate, ignored) or given up on earlier (``late``).
- ``seq > next_seq``: held in ``pending`` until the gap fills.
- an ``utterance_id`` the call already holds (in its window or held early) at another seq:
  dead-lettered (``duplicate_utterance_id``); its seq stays open for the real utterance.
- A gap is given up on (its seqs recorded as a skipped range, logged, counted) when it has
  lasted ``gap_timeout_s`` at the call's next message, when more than ``max_pending``
  utterances wait behind it, or when the call has ended: a CallEnded is produced after
  every utterance of its call and the partition is ordered, so what is missing then never
  comes. Skipped seqs are kept as ranges, so any gap costs constant memory and time.
- A call is finalised once every seq up to CallEnded's ``last_seq`` is applied or skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from contracts.events import CallEnded
from workers.dead_letter import Reason
from workers.messages import Utterance
from workers.state import SKIPPED_KEPT, CallRecord

log = logging.getLogger(__name__)


@dataclass
class Admission:
    """The outcome of :func:`admit` for one call.

    Attributes:
        ready: Utterances to apply now, in seq order.
        late: Utterances to dead-letter, with the reason and why.
        duplicates: Redeliveries ignored.
        skipped: Seq ranges given up on in this call, ``[start, stop)``.
        finalize: Whether the call is to be finalised.
    """

    ready: list[Utterance] = field(default_factory=list)
    late: list[tuple[Utterance, Reason, str]] = field(default_factory=list)
    duplicates: int = 0
    skipped: list[tuple[int, int]] = field(default_factory=list)
    finalize: bool = False

    @property
    def skipped_count(self) -> int:
        """How many seqs were given up on."""
        return sum(b - a for a, b in self.skipped)


def was_skipped(record: CallRecord, seq: int) -> bool:
    """Whether ``seq`` is in one of the record's remembered skipped ranges."""
    return any(a <= seq < b for a, b in record.skipped)


def admit(record: CallRecord, messages: list[Utterance | CallEnded], now_ms: int,
          gap_timeout_s: float, max_pending: int) -> Admission:
    """Fold a call's messages (in arrival order) into ``record`` (mutated) and say what to run."""
    out = Admission()
    ended = record.state.ended
    held = {n.utterance_id: n.seq for n in record.state.nodes}
    held.update((u.utterance_id, seq) for seq, u in record.pending.items())
    for msg in messages:
        if isinstance(msg, CallEnded):
            if ended or record.end_seq is not None:
                out.duplicates += 1
            else:
                record.end_seq = msg.last_seq
            continue
        known_at = held.get(msg.utterance_id)
        if known_at is not None and known_at != msg.seq:
            same_text = _text_of(record, known_at) == msg.event.text
            out.late.append((msg, "duplicate_utterance_id",
                             f"utterance_id {msg.utterance_id!r} already has seq {known_at} in this "
                             f"call ({'same' if same_text else 'different'} text); seq {msg.seq} "
                             "stays open"))
        elif msg.seq < record.next_seq or msg.seq in record.pending:
            if was_skipped(record, msg.seq):
                out.late.append((msg, "late", f"seq {msg.seq} arrived after it was given up on"))
            else:
                out.duplicates += 1
        elif ended or (record.end_seq is not None and msg.seq > record.end_seq):
            out.late.append((msg, "after_call_end",
                             f"seq {msg.seq} is past the call's last_seq {record.end_seq}"))
        else:
            record.pending[msg.seq] = msg
            held[msg.utterance_id] = msg.seq

    closing = record.end_seq is not None and not ended
    while True:
        while record.next_seq in record.pending:
            out.ready.append(record.pending.pop(record.next_seq))
            record.next_seq += 1
        if not record.pending:
            record.waiting_since_ms = None
            break
        if record.waiting_since_ms is None:
            record.waiting_since_ms = now_ms
        waited_s = (now_ms - record.waiting_since_ms) / 1000
        if not (closing or waited_s >= gap_timeout_s or len(record.pending) > max_pending):
            break
        _skip(record, record.next_seq, min(record.pending), out,
              why="call ended" if closing else f"waited {waited_s:.1f} s, {len(record.pending)} held")
        record.waiting_since_ms = None

    if closing:
        assert record.end_seq is not None
        if record.next_seq <= record.end_seq:
            _skip(record, record.next_seq, record.end_seq + 1, out, why="call ended")
        out.finalize = True
    return out


def skip_rejected(record: CallRecord, seq: int) -> None:
    """Remember ``seq`` (applied-to-be but rejected, e.g. bad features) as skipped."""
    _remember(record, seq, seq + 1)


def _text_of(record: CallRecord, seq: int) -> str | None:
    held = record.pending.get(seq)
    return held.event.text if held is not None else None


def _skip(record: CallRecord, start: int, stop: int, out: Admission, why: str) -> None:
    log.warning("call %s: giving up on missing seq %d..%d (%s)", record.state.call_id,
                start, stop - 1, why)
    _remember(record, start, stop)
    record.next_seq = stop
    out.skipped.append((start, stop))


def _remember(record: CallRecord, start: int, stop: int) -> None:
    ranges = record.skipped
    if ranges and ranges[-1][1] == start:
        ranges[-1] = (ranges[-1][0], stop)
    else:
        ranges.append((start, stop))
    del ranges[:-SKIPPED_KEPT]
