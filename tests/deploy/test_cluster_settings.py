"""Settings for a secured cluster: Kafka SASL/TLS reach aiokafka and faust; Redis TLS is rediss://."""

from __future__ import annotations

import ssl

import faust
import pytest
from pydantic import ValidationError

from streamer.settings import StreamerSettings
from workers.settings import WorkerSettings


def test_plaintext_adds_nothing() -> None:
    assert WorkerSettings().kafka_security() == {}
    assert "broker_credentials" not in WorkerSettings().faust_settings()


def test_sasl_ssl_reaches_aiokafka_and_faust(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CBERL_BROKER_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("CBERL_BROKER_SASL_USERNAME", "cberl")
    monkeypatch.setenv("CBERL_BROKER_SASL_PASSWORD", "pw-from-a-secret")
    monkeypatch.setenv("CBERL_REDIS_URL", "rediss://:redis-pw@redis.example:6380/0")
    streamer = StreamerSettings()
    conf = streamer.kafka_security()
    assert conf["security_protocol"] == "SASL_SSL" and conf["sasl_mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl_plain_username"] == "cberl" and conf["sasl_plain_password"] == "pw-from-a-secret"
    assert isinstance(conf["ssl_context"], ssl.SSLContext)
    shown = streamer.masked()
    assert shown["broker_sasl_password"] == "***" and "redis-pw" not in str(shown)
    assert str(streamer.redis_url).startswith("rediss://")
    credentials = WorkerSettings().faust_settings()["broker_credentials"]
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.username == "cberl" and credentials.ssl_context is not None


def test_sasl_without_credentials_is_an_error() -> None:
    with pytest.raises(ValidationError, match="broker_sasl_username"):
        WorkerSettings(broker_security_protocol="SASL_SSL")


def test_ssl_alone_gives_faust_ssl_credentials() -> None:
    conf = WorkerSettings(broker_security_protocol="SSL").faust_settings()
    assert isinstance(conf["broker_credentials"], faust.SSLCredentials)
