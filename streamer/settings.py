"""The streamer's one typed config object: env (``CBERL_*``) first, CLI flags override."""

from __future__ import annotations

import argparse
import json
import logging
import secrets
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cberl_model.features.media import FRAME_RATE
from cberl_model.features.whisper_model import DEFAULT_WHISPER_MODEL

log = logging.getLogger(__name__)


class StreamerSettings(BaseSettings):
    """Everything the gateway needs, passed down from ``__main__``; handlers read no globals."""

    model_config = SettingsConfigDict(env_prefix="CBERL_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    token_secret: SecretStr | None = None
    token_ttl_s: int = Field(default=6 * 3600, gt=0)
    cors_origins: list[str] = Field(default_factory=lambda: ["*"])
    broker_bootstrap_servers: str = "127.0.0.1:9092"
    broker_profile: Literal["tansu", "kafka"] = "tansu"
    utterances_topic_partitions: int = Field(default=1, ge=1)
    publish_backlog: int = Field(default=10_000, ge=1)
    redis_url: str = "redis://127.0.0.1:6379/0"
    call_stream_maxlen: int = Field(default=10_000, ge=1, description="approximate cap of each call's stream")
    call_stream_ttl_s: int = Field(default=3600, ge=1, description="a call's stream expires after this idle")
    model_dir: str | None = None
    whisper_model: str = DEFAULT_WHISPER_MODEL
    whisper_device: str = "auto"
    whisper_beam_size: int = Field(default=1, ge=1)
    asr_threads: int = Field(default=1, ge=1)
    max_no_speech_prob: float = Field(default=0.6, ge=0.0, le=1.0)
    vad_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    vad_min_silence_ms: int = Field(default=250, ge=32)
    vad_min_speech_ms: int = Field(default=150, ge=0)
    vad_speech_pad_ms: int = Field(default=100, ge=0)
    max_utterance_s: float = Field(default=15.0, gt=1.0)
    video_sample_fps: float = Field(default=FRAME_RATE, ge=0.0)
    ice_host_addresses: list[str] = Field(default_factory=lambda: ["127.0.0.1"])
    log_json: bool = False

    @field_validator("ice_host_addresses", "cors_origins")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must name at least one entry")
        return value

    def secret(self) -> bytes:
        """The token signing key (set by :func:`ensure_secret` when not configured)."""
        assert self.token_secret is not None, "ensure_secret() was not called"
        return self.token_secret.get_secret_value().encode()

    def effective_config(self) -> dict[str, Any]:
        """The settings as JSON-safe values, the secret masked (printed at start)."""
        values = self.model_dump(mode="json")
        values["token_secret"] = "***" if self.token_secret else None
        return values


def ensure_secret(settings: StreamerSettings) -> StreamerSettings:
    """Fill in a random token secret when none is configured (tokens then die with the process)."""
    if settings.token_secret is not None:
        return settings
    log.warning("CBERL_TOKEN_SECRET is not set: using a random secret, so join tokens will "
                "not survive a restart of this process")
    return settings.model_copy(update={"token_secret": SecretStr(secrets.token_urlsafe(32))})


def add_cli_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per setting (``--vad-min-silence-ms``); lists take JSON or a comma list."""
    for name, field in StreamerSettings.model_fields.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None,
                            help=field.description or f"(env CBERL_{name.upper()})")


def settings_from_cli(argv: list[str] | None = None) -> StreamerSettings:
    """Env values, overridden by whichever flags were given."""
    parser = argparse.ArgumentParser(prog="python -m streamer",
                                     description="The CBERL WebRTC gateway.")
    add_cli_flags(parser)
    args = vars(parser.parse_args(argv))
    overrides: dict[str, Any] = {}
    for name, raw in args.items():
        if raw is None:
            continue
        annotation = str(StreamerSettings.model_fields[name].annotation)
        if annotation.startswith("list"):
            overrides[name] = json.loads(raw) if raw.startswith("[") else raw.split(",")
        else:
            overrides[name] = raw
    base = StreamerSettings()
    return StreamerSettings.model_validate({**base.model_dump(), **overrides})
