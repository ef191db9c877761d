"""TopicSink: a record the broker refuses is sent again; valid utterances are not lost to it."""

from __future__ import annotations

import asyncio

import pytest

from workers import agents
from workers.agents import TopicSink
from workers.state import Emitted


class FlakyTopic:
    """Refuses the first ``refusals`` sends of each value, as a just-restarted tansu does."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.tries: dict[bytes, int] = {}
        self.delivered: list[bytes] = []

    async def send(self, key: bytes | None, value: bytes) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.tries[value] = self.tries.get(value, 0) + 1
        if value == b"refused-once" and self.tries[value] <= self.refusals:
            future.set_exception(RuntimeError("UnknownError"))
        else:
            self.delivered.append(value)
            future.set_result(None)
        return future


def _events(*values: bytes) -> list[Emitted]:
    return [Emitted(call_id="c-1", value=v) for v in values]


@pytest.mark.asyncio
async def test_only_refused_records_are_sent_again(monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(agents, "wait_exponential", lambda **_: lambda _state: 0.0)
    topic = FlakyTopic(refusals=2)
    await TopicSink(topic, topic).publish(_events(b"a", b"refused-once", b"b"))  # type: ignore[arg-type]
    assert sorted(topic.delivered) == [b"a", b"b", b"refused-once"]          # each exactly once
    assert topic.tries == {b"a": 1, b"refused-once": 3, b"b": 1}
    assert "sending them again (attempt 2 of 5)" in caplog.text


@pytest.mark.asyncio
async def test_a_refusal_that_persists_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agents, "wait_exponential", lambda **_: lambda _state: 0.0)
    topic = FlakyTopic(refusals=agents.PUBLISH_ATTEMPTS)
    with pytest.raises(RuntimeError, match="UnknownError"):
        await TopicSink(topic, topic).publish(_events(b"refused-once"))  # type: ignore[arg-type]
    assert topic.tries[b"refused-once"] == agents.PUBLISH_ATTEMPTS
