"""Signed utterances records: a valid signature verifies; anything else does not."""

from __future__ import annotations

from contracts.signing import SIGNATURE_HEADER, sign, signature_headers, verify

SECRET = b"s" * 32


def test_a_signed_record_verifies() -> None:
    headers = signature_headers(SECRET, b"call-1", b'{"x": 1}')
    assert verify(SECRET, b"call-1", b'{"x": 1}', headers)


def test_tampered_value_key_secret_or_missing_header_fail() -> None:
    headers = signature_headers(SECRET, b"call-1", b'{"x": 1}')
    assert not verify(SECRET, b"call-1", b'{"x": 2}', headers)
    assert not verify(SECRET, b"call-2", b'{"x": 1}', headers)  # no replay into another call
    assert not verify(b"t" * 32, b"call-1", b'{"x": 1}', headers)
    assert not verify(SECRET, b"call-1", b'{"x": 1}', None)
    assert not verify(SECRET, b"call-1", b'{"x": 1}', [(SIGNATURE_HEADER, b"not-hex\xff")])


def test_key_and_value_boundary_is_part_of_the_signature() -> None:
    assert sign(SECRET, b"ab", b"c") != sign(SECRET, b"a", b"bc")


def test_signing_off_sends_no_header() -> None:
    assert signature_headers(None, b"k", b"v") == []
