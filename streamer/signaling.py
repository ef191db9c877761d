"""Offer validation: what a join request must carry before a peer connection is made.

Checks are done on aiortc's own SDP parser so that what passes here is what the peer
connection will accept; every failure is a :class:`OfferError` with a message for a 400.
"""

from __future__ import annotations

import re
from typing import Any

from aiortc import RTCSessionDescription
from aiortc.sdp import SessionDescription

SUPPORTED_CODECS: dict[str, tuple[str, ...]] = {
    "audio": ("opus", "G722", "PCMU", "PCMA"),
    "video": ("VP8", "H264"),
}
"""Media codecs aiortc decodes here (Opus is what browsers send)."""


_LINE = re.compile(r"^[a-z]=\S")
"""RFC 4566: every SDP line is one lower-case letter, '=', and a value (aiortc's parser skips others)."""

FINGERPRINT_BYTES: dict[str, int] = {"sha-256": 32, "sha-384": 48, "sha-512": 64}
"""DTLS fingerprint hash functions aiortc verifies (RFC 8122), with their digest sizes."""

_HEX_PAIRS = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})*", re.ASCII)


class OfferError(ValueError):
    """The join request's offer cannot be used (malformed, no audio, unsupported codec)."""


def parse_offer(body: dict[str, Any]) -> RTCSessionDescription:
    """The offer of a join request, checked.

    Raises:
        OfferError: ``type`` is not ``offer``, the SDP does not parse, it has no audio
            m-line, or an audio/video m-line offers none of :data:`SUPPORTED_CODECS`.
    """
    sdp, kind = body.get("sdp"), body.get("type")
    if not isinstance(kind, str | None):
        raise OfferError(f"'type' must be 'offer', not a {type(kind).__name__}")
    if kind != "offer":
        raise OfferError(f"'type' must be 'offer', not {kind!r}")
    if not isinstance(sdp, str) or not sdp.strip():
        raise OfferError("'sdp' must be a non-empty SDP string")
    if not sdp.isascii():
        raise OfferError("malformed SDP: it must be ASCII")
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line]
    if lines[0] != "v=0":
        raise OfferError("malformed SDP: it must start with 'v=0'")
    for number, line in enumerate(lines, 1):
        if not _LINE.match(line):
            raise OfferError(f"malformed SDP: line {number} is not '<letter>=<value>': {line[:60]!r}")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises assorted errors on garbage input
        raise OfferError(f"malformed SDP: {type(exc).__name__}: {exc}") from exc
    kinds = [m.kind for m in parsed.media]
    if "audio" not in kinds:
        raise OfferError(f"the offer has no audio m-line (m-lines: {', '.join(kinds) or 'none'})")
    for media in parsed.media:
        if media.kind not in SUPPORTED_CODECS:
            continue
        offered = [c.name for c in media.rtp.codecs]
        supported = SUPPORTED_CODECS[media.kind]
        if not any(name.lower() == s.lower() for name in offered for s in supported):
            raise OfferError(f"unsupported {media.kind} codec: offered {', '.join(offered) or 'none'}; "
                             f"supported: {', '.join(supported)}")
        if not media.ice.usernameFragment or not media.dtls or not media.dtls.fingerprints:
            raise OfferError(f"the {media.kind} m-line lacks ICE credentials or a DTLS fingerprint")
        for fingerprint in media.dtls.fingerprints:
            _check_fingerprint(media.kind, fingerprint.algorithm, fingerprint.value)
    return RTCSessionDescription(sdp=sdp, type="offer")


def _check_fingerprint(kind: str, algorithm: str, value: str) -> None:
    """A DTLS fingerprint is a supported hash and its digest as colon-separated hex pairs."""
    size = FINGERPRINT_BYTES.get(algorithm.lower())
    if size is None:
        raise OfferError(f"the {kind} m-line has a DTLS fingerprint of unsupported hash {algorithm[:20]!r} "
                         f"(supported: {', '.join(FINGERPRINT_BYTES)})")
    if not _HEX_PAIRS.fullmatch(value) or len(value.split(":")) != size:
        raise OfferError(f"the {kind} m-line has a malformed {algorithm} DTLS fingerprint: expected "
                         f"{size} colon-separated hex bytes, not {value[:40]!r}")
