"""Signed, compact call tokens: ``base64url(JSON payload) "." base64url(HMAC-SHA256)``.

A token names one call, a role and, for participants, who they are. Roles:
``participant`` (join, send media, leave, end, read), ``subscriber`` (only read the call's
events) and ``invite`` (only mint participant tokens: the capability an invite link
carries; it reads nothing). The gateway signs with ``CBERL_TOKEN_SECRET``; nothing is
stored server-side, so any replica with the same secret accepts any token. A token that is
not ASCII, or not ``PAYLOAD.SIGNATURE``, is malformed (401), never an internal error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import asdict, dataclass
from typing import Literal

Role = Literal["participant", "subscriber", "invite"]
ROLES: tuple[Role, ...] = ("participant", "subscriber", "invite")
MAX_TOKEN_CHARS = 4096


class TokenError(Exception):
    """A token is missing, malformed, forged, expired, or for something else.

    Attributes:
        status: 401 when the token does not authenticate at all, 403 when it is valid but
            does not grant this request (other call, wrong role).
    """

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says."""

    call_id: str
    role: Role
    exp: int
    speaker_id: str | None = None
    speaker_name: str | None = None


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, payload: str) -> str:
    return _b64encode(hmac.new(secret, payload.encode(), hashlib.sha256).digest())


def issue_token(secret: bytes, call_id: str, role: Role, ttl_s: int,
                speaker_id: str | None = None, speaker_name: str | None = None) -> str:
    """A token for ``call_id`` and ``role`` that expires ``ttl_s`` seconds from now."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    if role == "participant" and not speaker_id:
        raise ValueError("a participant token needs a speaker_id")
    claims = TokenClaims(call_id=call_id, role=role, exp=int(time.time()) + ttl_s,
                         speaker_id=speaker_id, speaker_name=speaker_name)
    payload = _b64encode(json.dumps(asdict(claims), separators=(",", ":")).encode())
    return f"{payload}.{_sign(secret, payload)}"


def verify_token(secret: bytes, token: str | None, call_id: str,
                 role: Role | tuple[Role, ...]) -> TokenClaims:
    """The claims of ``token`` if it is genuine, unexpired, for ``call_id`` and ``role``
    (or one of the roles, given a tuple).

    Raises:
        TokenError: 401 (missing, malformed, bad signature, expired) or 403 (another call
            or role).
    """
    if not token:
        raise TokenError("a token is required (JSON field 'token' or 'Authorization: Bearer')")
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise TokenError("malformed token: expected PAYLOAD.SIGNATURE in ASCII")
    payload, _, signature = token.partition(".")
    if not payload or not signature:
        raise TokenError("malformed token: expected PAYLOAD.SIGNATURE")
    if not hmac.compare_digest(_sign(secret, payload).encode(), signature.encode()):
        raise TokenError("invalid token signature")
    try:
        claims = TokenClaims(**json.loads(_b64decode(payload)))
    except (binascii.Error, ValueError, TypeError, RecursionError) as exc:
        raise TokenError(f"malformed token payload: {exc}") from exc
    if not isinstance(claims.exp, int) or claims.exp < time.time():
        raise TokenError("token expired")
    if claims.call_id != call_id:
        raise TokenError(f"token is for another call, not {call_id!r}", status=403)
    roles = role if isinstance(role, tuple) else (role,)
    if claims.role not in roles:
        needed = " or ".join(repr(r) for r in roles)
        raise TokenError(f"token has role {claims.role!r}; this needs {needed}", status=403)
    return claims
