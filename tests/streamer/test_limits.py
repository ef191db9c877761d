"""The pure checks of :mod:`streamer.limits` (the gateway-level cases are in test_abuse.py)."""

from __future__ import annotations

import pytest

from streamer.limits import LimitError, SubscriptionLimiter, allowed_hosts, check_name, text_problem
from streamer.settings import StreamerSettings


@pytest.mark.parametrize(("text", "problem"), [
    ("Zoë 😀", None), ("a\u200db", None),
    ("x\ud800y", "a lone surrogate U+D800 at position 1 (not valid Unicode)"),
    ("\x1b[31m", "a control character U+001B at position 0"),
    ("a\x85", "a control character U+0085 at position 1"),
    ("a\u2029", "a control character U+2029 at position 1"),
    ("\u2066x", "a control character U+2066 at position 0"),
])
def test_text_problem(text: str, problem: str | None) -> None:
    assert text_problem(text) == problem


def test_check_name_strips_and_refuses() -> None:
    assert check_name("  ann ") == "ann"
    with pytest.raises(LimitError) as err:
        check_name(None)
    assert (err.value.status, str(err.value)) == (
        400, "a participant name must be a non-empty string of at most 64 characters, not None")


def test_subscription_slots_are_returned() -> None:
    limiter = SubscriptionLimiter(StreamerSettings(max_subscriptions=2, max_subscriptions_per_call=1))
    with limiter.open("c1", "a"), limiter.open("c2", "a"):
        with pytest.raises(LimitError) as err:
            limiter.check("c3", "b")
        assert (err.value.status, str(err.value), err.value.retry_after_s) == (
            429, "too many open subscriptions: 2 (at most 2); retry later", 30)
    assert limiter.total == 0
    with limiter.open("c1", "a"):
        assert limiter.total == 1


def test_allowed_hosts_default_to_the_bind_host_and_loopback() -> None:
    assert allowed_hosts(StreamerSettings(host="10.0.0.5", port=8080)) == {
        "10.0.0.5:8080", "localhost:8080", "127.0.0.1:8080", "[::1]:8080"}
    assert allowed_hosts(StreamerSettings(allowed_hosts=["Calls.Example:443"])) == {"calls.example:443"}
