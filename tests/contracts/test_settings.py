"""The shared settings base: one variable per fact, secrets masked by type."""

from __future__ import annotations

import pytest

from contracts.settings import SharedSettings, mask_url
from streamer.settings import StreamerSettings
from workers.settings import WorkerSettings

SHARED = ("broker_bootstrap_servers", "broker_profile", "utterances_topic", "emotions_topic",
          "dead_letter_topic", "partitions", "redis_url", "call_stream_ttl_s", "call_stream_maxlen",
          "event_secret", "model_dir", "log_level", "log_json")


def test_each_shared_fact_is_declared_once() -> None:
    for name in SHARED:
        assert StreamerSettings.model_fields[name] is not None
        assert name in SharedSettings.model_fields
    own = set(StreamerSettings.model_fields) & set(WorkerSettings.model_fields)
    assert own == set(SharedSettings.model_fields)


def test_one_variable_sets_both_services(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CBERL_PARTITIONS", "12")
    monkeypatch.setenv("CBERL_CALL_STREAM_TTL_S", "60")
    monkeypatch.setenv("CBERL_UTTERANCES_TOPIC", "utt-x")
    for cls in (StreamerSettings, WorkerSettings):
        settings = cls()
        got = (settings.partitions, settings.call_stream_ttl_s, settings.utterances_topic)
        assert got == (12, 60, "utt-x")


def test_secrets_are_masked_by_type() -> None:
    settings = WorkerSettings(redis_url="redis://app:pa55@redis:6380/1", event_secret="hmac-key")
    shown = settings.masked()
    assert shown["redis_url"] == "redis://app:***@redis:6380/1" and shown["event_secret"] == "***"
    assert "pa55" not in str(shown) and "hmac-key" not in str(shown)
    assert settings.event_key() == b"hmac-key"


def test_mask_url_keeps_urls_without_password() -> None:
    assert mask_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert mask_url("rediss://:pw@h/0") == "rediss://:***@h/0"
