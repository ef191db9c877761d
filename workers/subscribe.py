"""``python -m workers.subscribe``: read the ``emotions`` topic as a back-end service would.

A short, complete Kafka consumer of the Emotion contract (:class:`~contracts.events.
EmotionEvent`): it validates each record, keeps the highest revision per utterance
(delivery is at-least-once, so repeats are normal) and prints each label that changed
the view as one JSON line. Use it as is, or as the template of your own consumer::

    python -m workers.subscribe --bootstrap-servers 127.0.0.1:9092 --call c-AbC123 --from-beginning

With ``--idle-exit-s`` it stops after that many seconds without a record (scripts, tests).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from contracts.cli import UserError, run_cli
from contracts.events import EmotionEvent
from contracts.topics import EMOTIONS_TOPIC


def newer(view: dict[str, EmotionEvent], event: EmotionEvent) -> bool:
    """Record ``event`` in ``view`` if it is the highest revision seen for its utterance."""
    current = view.get(event.utterance_id)
    if current is not None and current.revision >= event.revision:
        return False
    view[event.utterance_id] = event
    return True


async def consume(bootstrap_servers: str, call_id: str | None, from_beginning: bool,
                  idle_exit_s: float | None, group: str | None) -> dict[str, EmotionEvent]:
    """Print the view's changes until interrupted (or idle); returns the final view."""
    consumer = AIOKafkaConsumer(
        EMOTIONS_TOPIC, bootstrap_servers=bootstrap_servers, group_id=group,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=group is not None, fetch_max_wait_ms=100)
    try:
        await consumer.start()
    except KafkaError:
        await consumer.stop()  # release its connections before the error is reported
        raise
    view: dict[str, EmotionEvent] = {}
    idle = 0.0
    try:
        while idle_exit_s is None or idle < idle_exit_s:
            batch = await consumer.getmany(timeout_ms=500)
            idle = 0.0 if batch else idle + 0.5
            for records in batch.values():
                for record in records:
                    if call_id is not None and record.key != call_id.encode():
                        continue
                    try:
                        event = EmotionEvent.model_validate_json(record.value)
                    except ValidationError as exc:
                        print(f"skipped record {record.partition}/{record.offset}: "
                              f"{exc.errors()[0]['msg']}", file=sys.stderr)
                        continue
                    if newer(view, event):
                        print(event.model_dump_json(), flush=True)
    finally:
        await consumer.stop()
    return view


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.subscribe", description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--call", help="only this call's events")
    parser.add_argument("--from-beginning", action="store_true", help="replay the retained topic first")
    parser.add_argument("--group", help="consumer group (commits offsets); default: none")
    parser.add_argument("--idle-exit-s", type=float, help="stop after this long without records")
    args = parser.parse_args(argv)
    try:
        asyncio.run(consume(args.bootstrap_servers, args.call, args.from_beginning, args.idle_exit_s,
                            args.group))
    except KafkaError as exc:
        raise UserError(f"broker {args.bootstrap_servers}: {exc}") from None
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    run_cli(main)
