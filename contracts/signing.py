"""Signed ``utterances`` records: only the streamer can put an utterance into a call.

The streamer signs the exact bytes of every record it produces with HMAC-SHA256 under the
shared ``event_secret`` and sends the signature in the record header
:data:`SIGNATURE_HEADER`; a worker configured with the same secret dead-letters records
whose signature is missing or wrong, so a process that can reach the broker but does not
hold the secret cannot inject utterances (or end calls). The key is the call id as well,
so a signed record cannot be replayed into another call.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

SIGNATURE_HEADER = "cberl-signature"


def sign(secret: bytes, key: bytes, value: bytes) -> bytes:
    """The hex HMAC-SHA256 of one record (its key and value) under ``secret``."""
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    mac.update(len(key).to_bytes(4, "big"))
    mac.update(key)
    mac.update(value)
    return mac.hexdigest().encode("ascii")


def signature_headers(secret: bytes | None, key: bytes, value: bytes) -> list[tuple[str, bytes]]:
    """Kafka headers for a record: the signature, or none when signing is off."""
    return [] if secret is None else [(SIGNATURE_HEADER, sign(secret, key, value))]


def verify(secret: bytes, key: bytes | None, value: bytes,
           headers: Iterable[tuple[str, bytes]] | None) -> bool:
    """Whether the record carries a valid signature (constant-time comparison)."""
    given = next((v for k, v in (headers or ()) if k == SIGNATURE_HEADER), None)
    if not isinstance(given, bytes | bytearray):
        return False
    return hmac.compare_digest(bytes(given), sign(secret, key or b"", value))
