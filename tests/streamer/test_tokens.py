"""Join/subscriber tokens: genuine ones verify, anything else is a clear 401 or 403."""

from __future__ import annotations

import time

import pytest

from streamer.tokens import TokenError, issue_token, verify_token

SECRET = b"k" * 32


def test_participant_token_round_trip() -> None:
    token = issue_token(SECRET, "c-1", "participant", 60, speaker_id="p-1", speaker_name="Ann")
    claims = verify_token(SECRET, token, "c-1", "participant")
    assert (claims.call_id, claims.role, claims.speaker_id, claims.speaker_name) == \
        ("c-1", "participant", "p-1", "Ann")
    assert claims.exp >= time.time() + 59
    assert len(token) < 200, "tokens must stay compact"


@pytest.mark.parametrize(("mangle", "status", "message"), [
    (lambda t: "", 401, "required"),
    (lambda t: "garbage", 401, "malformed"),
    (lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), 401, "signature"),
    (lambda t: "eyJ4IjoxfQ." + t.split(".")[1], 401, "signature"),
])
def test_forged_or_malformed_tokens_are_401(mangle, status: int, message: str) -> None:
    token = issue_token(SECRET, "c-1", "subscriber", 60)
    with pytest.raises(TokenError, match=message) as err:
        verify_token(SECRET, mangle(token), "c-1", "subscriber")
    assert err.value.status == status


def test_other_secret_expired_other_call_and_role() -> None:
    token = issue_token(SECRET, "c-1", "subscriber", 60)
    with pytest.raises(TokenError, match="signature") as err:
        verify_token(b"other", token, "c-1", "subscriber")
    assert err.value.status == 401
    with pytest.raises(TokenError, match="expired") as err:
        verify_token(SECRET, issue_token(SECRET, "c-1", "subscriber", -1), "c-1", "subscriber")
    assert err.value.status == 401
    with pytest.raises(TokenError, match="another call") as err:
        verify_token(SECRET, token, "c-2", "subscriber")
    assert err.value.status == 403
    with pytest.raises(TokenError, match="role 'subscriber'") as err:
        verify_token(SECRET, token, "c-1", "participant")
    assert err.value.status == 403


def test_issue_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="speaker_id"):
        issue_token(SECRET, "c-1", "participant", 60)
    with pytest.raises(ValueError, match="role"):
        issue_token(SECRET, "c-1", "admin", 60)  # type: ignore[arg-type]


def test_an_invite_token_is_its_own_role() -> None:
    token = issue_token(SECRET, "c-1", "invite", 60)
    assert verify_token(SECRET, token, "c-1", "invite").role == "invite"
    with pytest.raises(TokenError) as err:
        verify_token(SECRET, token, "c-1", ("participant", "subscriber"))
    assert (err.value.status, str(err.value)) == (
        403, "token has role 'invite'; this needs 'participant' or 'subscriber'")


@pytest.mark.parametrize("token", ["é.é", "abc.d\u00e9f", "\ud800.x", "x" * 5000])
def test_non_ascii_or_huge_tokens_are_401_not_500(token: str) -> None:
    """``hmac.compare_digest`` raised TypeError on non-ASCII str: a 500 with a traceback."""
    with pytest.raises(TokenError) as err:
        verify_token(SECRET, token, "c-1", "subscriber")
    assert (err.value.status, str(err.value)) == (401, "malformed token: expected PAYLOAD.SIGNATURE in ASCII")
