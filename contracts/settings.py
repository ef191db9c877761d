"""The settings base every service inherits: one field, one environment variable, per fact.

Broker, Redis, topic names and partitions, the call stream's TTL and cap, the model
directory and logging are declared here once; :class:`streamer.settings.StreamerSettings`
and :class:`workers.settings.WorkerSettings` add only what is their own. A value is read
from ``CBERL_<FIELD>`` and overridden by ``--<field>`` on the command line
(:func:`contracts.cli.load_settings`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AnyUrl, Field, RedisDsn, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.topics import DEAD_LETTER_TOPIC, EMOTIONS_TOPIC, UTTERANCES_TOPIC

BOOTSTRAP_PATTERN = r"^[^\s,:/]+:\d+(,[^\s,:/]+:\d+)*$"


class SharedSettings(BaseSettings):
    """What the streamer and the workers must agree on."""

    model_config = SettingsConfigDict(env_prefix="CBERL_", extra="forbid", cli_kebab_case=True,
                                      cli_implicit_flags=True, cli_avoid_json=True)

    # -- broker and topics ------------------------------------------------------------
    broker_bootstrap_servers: str = Field(
        "127.0.0.1:9092", pattern=BOOTSTRAP_PATTERN,
        description="Kafka bootstrap servers host:port[,host:port...]")
    broker_profile: Literal["tansu", "kafka"] = Field(
        "tansu", description="tansu: settings the embedded broker needs; kafka: Kafka's defaults")
    utterances_topic: str = Field(UTTERANCES_TOPIC, min_length=1)
    emotions_topic: str = Field(EMOTIONS_TOPIC, min_length=1)
    dead_letter_topic: str = Field(DEAD_LETTER_TOPIC, min_length=1)
    partitions: int = Field(8, ge=1, description="partitions of utterances/emotions when created")
    broker_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol (SASL_SSL for a secured cluster)")
    broker_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism (with a SASL_* protocol)")
    broker_sasl_username: str | None = Field(None, description="SASL user (with a SASL_* protocol)")
    broker_sasl_password: SecretStr | None = Field(None, description="SASL password (env only)")
    broker_ssl_cafile: Path | None = Field(None, description="CA bundle that signed the brokers' "
                                                             "certificates (default: the system's)")

    # -- Redis and the call stream ----------------------------------------------------
    redis_url: RedisDsn = Field(RedisDsn("redis://127.0.0.1:6379/0"),
                                description="Redis for call state and call streams")
    call_stream_ttl_s: int = Field(3600, ge=1, description="a call's stream and state expire after this idle")
    call_stream_maxlen: int = Field(10_000, ge=1, description="approximate cap of each call stream")

    event_secret: SecretStr | None = Field(
        None, description="HMAC key of utterances records: the streamer signs, workers verify "
                          "(unset: unsigned records are accepted)")

    # -- model and logging ------------------------------------------------------------
    model_dir: Path | None = Field(None, description="model directory; default: the bundled model")
    encoder_precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="text encoder's serving dtype; auto: bfloat16 on a CUDA device "
                            "with it, float32 on a CPU (bfloat16 there: README, 'Serving "
                            "precision')")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = Field(False, description="one JSON object per log line")
    standby_ready_file: Path | None = Field(
        None, description="be a warm spare: load everything, write this file, then wait for "
                          "SIGUSR1 before serving (the embedded stack keeps one streamer and "
                          "one worker spare, so a dead one is replaced in seconds)")

    @model_validator(mode="after")
    def _distinct_topics(self) -> SharedSettings:
        names = [self.utterances_topic, self.emotions_topic, self.dead_letter_topic]
        if len(set(names)) != 3:
            raise ValueError(f"topic names must differ, got {names}")
        return self

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> SharedSettings:
        if self.broker_security_protocol.startswith("SASL_") and not (
                self.broker_sasl_username and self.broker_sasl_password):
            raise ValueError(f"broker_security_protocol={self.broker_security_protocol} needs "
                             f"broker_sasl_username and broker_sasl_password")
        return self

    def topic_partitions(self) -> dict[str, int]:
        """``{topic: partitions}`` for :func:`contracts.topics.ensure_topics`."""
        return {self.utterances_topic: self.partitions, self.emotions_topic: self.partitions,
                self.dead_letter_topic: 1}

    def kafka_security(self) -> dict[str, Any]:
        """aiokafka keyword arguments (producer, consumer, admin) for the broker's security:
        ``{}`` for PLAINTEXT; an SSL context for SSL/SASL_SSL; SASL user and password."""
        protocol = self.broker_security_protocol
        if protocol == "PLAINTEXT":
            return {}
        conf: dict[str, Any] = {"security_protocol": protocol}
        if protocol in ("SSL", "SASL_SSL"):
            import ssl

            conf["ssl_context"] = ssl.create_default_context(
                cafile=str(self.broker_ssl_cafile) if self.broker_ssl_cafile else None)
        if protocol.startswith("SASL_"):
            conf.update(sasl_mechanism=self.broker_sasl_mechanism,
                        sasl_plain_username=self.broker_sasl_username,
                        sasl_plain_password=(self.broker_sasl_password.get_secret_value()
                                             if self.broker_sasl_password else None))
        return conf

    def event_key(self) -> bytes | None:
        """The raw ``event_secret`` for :mod:`contracts.signing` (``None``: signing off)."""
        return None if self.event_secret is None else self.event_secret.get_secret_value().encode()

    def masked(self) -> dict[str, Any]:
        """The settings as printed at start, secrets masked (:func:`masked`)."""
        return masked(self)


def masked(settings: BaseSettings) -> dict[str, Any]:
    """``settings`` as JSON-safe values with every secret masked, by type.

    :class:`~pydantic.SecretStr` fields print as ``***`` and URLs (DSNs) lose their
    password, whatever the field is called.
    """
    data = settings.model_dump(mode="json")
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            data[name] = "***"
        elif isinstance(value, AnyUrl) and value.password is not None:
            data[name] = mask_url(str(value))
    return data


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    parsed = AnyUrl(url)
    if parsed.password is None:
        return url
    user = parsed.username or ""
    port = f":{parsed.port}" if parsed.port else ""
    rest = parsed.path or ""
    query = f"?{parsed.query}" if parsed.query else ""
    return f"{parsed.scheme}://{user}:***@{parsed.host}{port}{rest}{query}"
