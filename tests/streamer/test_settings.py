"""Settings: env with the CBERL_ prefix, flags override, the secret never printed."""

from __future__ import annotations

import pytest

from contracts.cli import load_settings
from streamer.settings import StreamerSettings, ensure_secret


def test_env_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CBERL_PORT", "9001")
    monkeypatch.setenv("CBERL_VAD_MIN_SILENCE_MS", "400")
    monkeypatch.setenv("CBERL_TOKEN_SECRET", "s3cret-value")
    settings = load_settings(StreamerSettings, ["--vad-min-silence-ms", "300",
                                                "--ice-host-addresses", "127.0.0.1,::1"])
    assert settings.port == 9001 and settings.vad_min_silence_ms == 300
    assert settings.ice_host_addresses == ["127.0.0.1", "::1"]
    shown = settings.masked()
    assert shown["token_secret"] == "***" and "s3cret-value" not in str(shown)
    assert settings.secret() == b"s3cret-value"


def test_random_secret_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CBERL_TOKEN_SECRET", raising=False)
    a, b = ensure_secret(StreamerSettings()), ensure_secret(StreamerSettings())
    assert len(a.secret()) >= 32 and a.secret() != b.secret()


def test_defaults_bind_loopback_only() -> None:
    settings = StreamerSettings()
    assert settings.host == "127.0.0.1" and settings.ice_host_addresses == ["127.0.0.1"]
