"""Pure per-call ordering: which utterances to apply now, hold, drop or dead-letter.

Kafka keeps a partition in order, but the streamer may redeliver (duplicates), and a lost
or rejected utterance leaves a gap. The rules, applied to a call's messages of one
micro-batch together with its stored :class:`~workers.state.CallRecord`:

- ``seq < next_seq``: already applied (duplicate, ignored) or given up on earlier (``late``).
- ``seq > next_seq``: held in ``pending`` until the gap fills.
- A gap is given up on (its seqs recorded as skipped, logged, counted) when it has lasted
  ``gap_timeout_s`` at the call's next message, when more than ``max_pending`` utterances
  wait behind it, or when the call has ended: a CallEnded is produced after every
  utterance of its call and the partition is ordered, so what is missing then never comes.
- A call is finalised once every seq up to CallEnded's ``last_seq`` is applied or skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from contracts.events import CallEnded, UtteranceEvent
from workers.dead_letter import Reason
from workers.state import SKIPPED_KEPT, CallRecord

log = logging.getLogger(__name__)


@dataclass
class Admission:
    """The outcome of :func:`admit` for one call."""

    ready: list[UtteranceEvent] = field(default_factory=list)
    late: list[tuple[UtteranceEvent, Reason, str]] = field(default_factory=list)
    duplicates: int = 0
    skipped: list[int] = field(default_factory=list)
    finalize: bool = False


def admit(record: CallRecord, messages: list[UtteranceEvent | CallEnded], now_ms: int,
          gap_timeout_s: float, max_pending: int) -> Admission:
    """Fold a call's messages (in arrival order) into ``record`` (mutated) and say what to run."""
    out = Admission()
    ended = record.state.ended
    for msg in messages:
        if isinstance(msg, CallEnded):
            if ended or record.end_seq is not None:
                out.duplicates += 1
            else:
                record.end_seq = msg.last_seq
            continue
        if msg.seq < record.next_seq or msg.seq in record.pending:
            if msg.seq in record.skipped:
                out.late.append((msg, "late", f"seq {msg.seq} arrived after it was given up on"))
            else:
                out.duplicates += 1
        elif ended or (record.end_seq is not None and msg.seq > record.end_seq):
            out.late.append((msg, "after_call_end",
                             f"seq {msg.seq} is past the call's last_seq {record.end_seq}"))
        else:
            record.pending[msg.seq] = msg.model_dump_json()

    closing = record.end_seq is not None and not ended
    while True:
        while record.next_seq in record.pending:
            out.ready.append(UtteranceEvent.model_validate_json(record.pending.pop(record.next_seq)))
            record.next_seq += 1
        if not record.pending:
            record.waiting_since_ms = None
            break
        if record.waiting_since_ms is None:
            record.waiting_since_ms = now_ms
        waited_s = (now_ms - record.waiting_since_ms) / 1000
        if not (closing or waited_s >= gap_timeout_s or len(record.pending) > max_pending):
            break
        _skip(record, range(record.next_seq, min(record.pending)), out,
              why="call ended" if closing else f"waited {waited_s:.1f} s, {len(record.pending)} held")
        record.waiting_since_ms = None

    if closing:
        assert record.end_seq is not None
        if record.next_seq <= record.end_seq:
            _skip(record, range(record.next_seq, record.end_seq + 1), out, why="call ended")
        out.finalize = True
    return out


def _skip(record: CallRecord, seqs: range, out: Admission, why: str) -> None:
    log.warning("call %s: giving up on missing seq %d..%d (%s)", record.state.call_id,
                seqs.start, seqs.stop - 1, why)
    record.skipped = [*record.skipped, *seqs][-SKIPPED_KEPT:]
    record.next_seq = seqs.stop
    out.skipped.extend(seqs)
