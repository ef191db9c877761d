"""Abuse limits of the gateway, kept out of the handlers: each check raises :class:`LimitError`.

- **Input**: a participant name is valid Unicode (no lone surrogates), has no control,
  line-separator or bidi-override characters and is at most 64 characters
  (:func:`check_name`), so it can neither break serialization nor forge a log line.
- **Call creation**: an optional API key (``CBERL_API_KEY``: ``Authorization: Bearer`` or
  ``X-API-Key``, :func:`check_api_key`), at most ``max_names_per_request`` names (400) and
  ``max_active_calls`` calls (503 with ``Retry-After``), checked before anything is
  registered (:func:`check_new_call`).
- **Participants**: at most ``max_participants_per_call`` live connections per call
  (:func:`check_join`, 503 with ``Retry-After``).
- **Subscriptions**: at most ``max_subscriptions`` open streams in all,
  ``max_subscriptions_per_call`` per call and ``max_subscriptions_per_client`` per client
  address (:class:`SubscriptionLimiter`, 429 with ``Retry-After``). They read on their own
  Redis pool, sized to the total, so no number of streams starves the write path.
- **Host header**: only the names this gateway is reached by (:func:`allowed_hosts`);
  anything else is a DNS-rebinding attempt or a misrouted request (421).

Limits are per process, like the calls they protect.
"""

from __future__ import annotations

import contextlib
import hmac
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator, Mapping, Sized

from streamer.settings import StreamerSettings

MAX_NAME_CHARS = 64
RETRY_AFTER_S = 30
"""What ``Retry-After`` says when a capacity limit is hit (calls end, streams close)."""

_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


class LimitError(Exception):
    """A request refused by a limit: ``status``, the message, and ``Retry-After`` if any."""

    def __init__(self, status: int, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


def text_problem(value: str) -> str | None:
    """Why ``value`` is not clean text (a lone surrogate, a control character), or ``None``."""
    for i, char in enumerate(value):
        category = unicodedata.category(char)
        if category == "Cs":
            return f"a lone surrogate U+{ord(char):04X} at position {i} (not valid Unicode)"
        if category in _FORBIDDEN_CATEGORIES or _BIDI_CONTROLS.match(char):
            return f"a control character U+{ord(char):04X} at position {i}"
    return None


def check_name(value: object) -> str:
    """A participant name, stripped; :class:`LimitError` 400 with the reason otherwise."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_CHARS:
        shown = value if not isinstance(value, str) else value[:80]
        raise LimitError(400, f"a participant name must be a non-empty string of at most "
                              f"{MAX_NAME_CHARS} characters, not {shown!r}")
    problem = text_problem(value)
    if problem is not None:
        raise LimitError(400, f"a participant name must be plain text: it holds {problem}")
    return value.strip()


def check_api_key(settings: StreamerSettings, headers: Mapping[str, str]) -> None:
    """401 unless ``CBERL_API_KEY`` is unset or the request carries it (constant time)."""
    if settings.api_key is None:
        return
    auth = headers.get("Authorization", "")
    given = auth[len("Bearer "):].strip() if auth.startswith("Bearer ") else headers.get("X-API-Key", "")
    expected = settings.api_key.get_secret_value().encode()
    if not given or not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected):
        raise LimitError(401, "creating a call needs the API key ('Authorization: Bearer <key>' "
                              "or 'X-API-Key: <key>')" if not given else "invalid API key")


def check_new_call(settings: StreamerSettings, calls: Sized, names: object) -> list[str]:
    """The checked names of a new call; 400 for bad or too many names, 503 when full."""
    if not isinstance(names, list):
        raise LimitError(400, "'participants' must be a list of names")
    if len(names) > settings.max_names_per_request:
        raise LimitError(400, f"too many participant names: {len(names)}; at most "
                              f"{settings.max_names_per_request} per request")
    checked = [check_name(n) for n in names]
    if len(checked) > settings.max_participants_per_call:
        raise LimitError(400, f"too many participants: {len(checked)}; a call has at most "
                              f"{settings.max_participants_per_call}")
    if len(calls) >= settings.max_active_calls:
        raise LimitError(503, f"at capacity: {len(calls)} active calls (at most "
                              f"{settings.max_active_calls}); retry later", RETRY_AFTER_S)
    return checked


def check_join(settings: StreamerSettings, participants: Mapping[str, object], speaker_id: str) -> None:
    """503 when the call already holds its maximum of live participants (a reconnect passes)."""
    if speaker_id not in participants and len(participants) >= settings.max_participants_per_call:
        raise LimitError(503, f"the call is full: {len(participants)} participants (at most "
                              f"{settings.max_participants_per_call}); retry later", RETRY_AFTER_S)


def check_invite(settings: StreamerSettings, minted: int) -> None:
    """429 once a call's invite has minted its maximum of participant tokens: a leaked
    invite link can add speakers to one call, but not without bound."""
    if minted >= settings.max_invites_per_call:
        raise LimitError(429, f"this call's invite has minted {minted} participant tokens (at "
                              f"most {settings.max_invites_per_call}); create a new call")


def allowed_hosts(settings: StreamerSettings) -> frozenset[str]:
    """The Host header values served: ``allowed_hosts``, or the bind host and loopback names."""
    if settings.allowed_hosts:
        return frozenset(h.lower() for h in settings.allowed_hosts)
    names = {settings.host, "localhost", "127.0.0.1", "[::1]"}
    return frozenset(f"{name}:{settings.port}".lower() for name in names)


class SubscriptionLimiter:
    """Counts open subscriptions (in all, per call, per client); :meth:`open` holds one."""

    def __init__(self, settings: StreamerSettings) -> None:
        self._settings = settings
        self._per_call: Counter[str] = Counter()
        self._per_client: Counter[str] = Counter()
        self.total = 0

    def check(self, call_id: str, client: str) -> None:
        """429 when one more stream of ``call_id`` for ``client`` would pass a limit."""
        s = self._settings
        if self.total >= s.max_subscriptions:
            raise LimitError(429, f"too many open subscriptions: {self.total} (at most "
                                  f"{s.max_subscriptions}); retry later", RETRY_AFTER_S)
        if self._per_call[call_id] >= s.max_subscriptions_per_call:
            raise LimitError(429, f"too many open subscriptions of call {call_id!r}: "
                                  f"{self._per_call[call_id]} (at most {s.max_subscriptions_per_call})",
                             RETRY_AFTER_S)
        if self._per_client[client] >= s.max_subscriptions_per_client:
            raise LimitError(429, f"too many open subscriptions from this client: "
                                  f"{self._per_client[client]} (at most {s.max_subscriptions_per_client})",
                             RETRY_AFTER_S)

    @contextlib.contextmanager
    def open(self, call_id: str, client: str) -> Iterator[None]:
        """Hold one subscription slot for the ``with`` block (:meth:`check` first)."""
        self.check(call_id, client)
        self.total += 1
        self._per_call[call_id] += 1
        self._per_client[client] += 1
        try:
            yield
        finally:
            self.total -= 1
            for counter, key in ((self._per_call, call_id), (self._per_client, client)):
                counter[key] -= 1
                if counter[key] <= 0:
                    del counter[key]
