"""The streamer's one typed config object: :class:`contracts.settings.SharedSettings` plus
what only the gateway needs; env (``CBERL_*``) first, flags override."""

from __future__ import annotations

import logging
import secrets

from pydantic import Field, SecretStr, field_validator

from cberl_model.features.media import FRAME_RATE
from cberl_model.features.whisper_model import DEFAULT_WHISPER_MODEL
from contracts.settings import SharedSettings

log = logging.getLogger(__name__)


class StreamerSettings(SharedSettings):
    """Everything the gateway needs, passed down from ``__main__``; handlers read no globals."""

    host: str = Field("127.0.0.1", description="address the gateway binds")
    port: int = Field(default=8080, ge=0, le=65535)
    token_secret: SecretStr | None = Field(None, description="token signing key; random when unset")
    token_ttl_s: int = Field(default=6 * 3600, gt=0)
    cors_origins: list[str] = Field(
        default_factory=list,
        description="origins allowed cross-origin (exact match; '*' any); none by default")
    publish_backlog: int = Field(default=10_000, ge=1, description="utterances held while the broker is away")
    whisper_model: str = DEFAULT_WHISPER_MODEL
    whisper_device: str = "auto"
    whisper_beam_size: int = Field(default=1, ge=1)
    # -- ASR cost and capacity (streamer/asr.py, streamer/analyzer.py, streamer/capacity.py) --
    asr_window_s: float = Field(default=10.0, ge=5.0, le=30.0,
                                description="Whisper encoder window; 30 = faster-whisper's own padding")
    asr_max_batch: int = Field(default=0, ge=0, description="segments per Whisper call; 0: auto "
                                                            "(4 on a CPU, 16 on CUDA)")
    asr_degrade_backlog_s: float = Field(default=8.0, gt=0,
                                         description="ASR backlog (s of audio) above which ASR degrades")
    asr_degrade_window_s: float | None = Field(
        default=None, ge=5.0, le=30.0,
        description="encoder window while degraded; unset: keep asr_window_s (tiny.en breaks below 10 s)")
    utterance_unit: str = Field(default="segment", pattern="^(segment|turn)$",
                                description="segment: every VAD segment; turn: a speaker's segments "
                                            "until another speaks or turn_pause_ms of silence")
    turn_pause_ms: int = Field(default=700, ge=100, description="silence that ends a turn")
    asr_speculate_ms: int = Field(default=100, ge=0, description="transcribe a segment this long into "
                                                                 "its closing silence when the ASR is idle "
                                                                 "(at least vad_speech_pad_ms); 0: never")
    capacity_max_backlog_s: float = Field(default=3.0, gt=0,
                                          description="new calls/joins refused above this ASR backlog")
    capacity_max_loop_lag_ms: float = Field(default=250.0, gt=0,
                                            description="new calls/joins refused above this event-loop lag")
    capacity_max_asr_utilization: float = Field(
        default=0.7, gt=0, le=1.0, description="refused when the ASR thread's busy share (last "
                                               "seconds), projected with one more participant, exceeds this")
    capacity_participants_per_core: float = Field(
        default=6.0, ge=0.0,
        description="participant seats per CPU core (a call reserves one per name it is created "
                    "with); 0: no seat budget. 6 is what benchmarks/e2e.py measured on a 2-core "
                    "CPU with tiny.en and the bundled mpnet model: 12 participants lost no line "
                    "(rev-0 p95 1.5 s), 16 lost 7 of 62 in one of two runs (8 held with MiniLM)")
    capacity_retry_after_s: int = Field(default=15, ge=1, description="Retry-After of a refusal")
    max_no_speech_prob: float = Field(
        default=0.75, ge=0.0, le=1.0,
        description="with a mean log-prob below -1: silence. 0.75, not faster-whisper's 0.6: "
                    "the 10 s window lifts short words ('Really?', 'Hey') to 0.6-0.66")
    vad_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    vad_min_silence_ms: int = Field(default=250, ge=32)
    vad_min_speech_ms: int = Field(default=150, ge=0)
    vad_speech_pad_ms: int = Field(default=100, ge=0)
    max_utterance_s: float = Field(default=15.0, gt=1.0)
    video_sample_fps: float = Field(default=FRAME_RATE, ge=0.0)
    ice_host_addresses: list[str] = Field(default_factory=lambda: ["127.0.0.1"])

    # -- abuse limits (streamer/limits.py) --------------------------------------------
    api_key: SecretStr | None = Field(
        None, description="when set, POST /v1/calls needs 'Authorization: Bearer <key>' or 'X-API-Key'")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Host header values served (host:port); default: the bind "
                                          "host, localhost, 127.0.0.1 and [::1] with the port")
    max_active_calls: int = Field(default=100, ge=1, description="calls at once; beyond: 503")
    max_participants_per_call: int = Field(default=16, ge=1, description="live participants of a call")
    max_names_per_request: int = Field(default=16, ge=0, description="names in one POST /v1/calls")
    max_invites_per_call: int = Field(
        default=64, ge=0, description="participant tokens one call's invite can mint (each a new "
                                      "speaker); beyond: 429")
    call_idle_timeout_s: float = Field(default=600.0, gt=0,
                                       description="a call with no participant this long is ended")
    connect_timeout_s: float = Field(default=30.0, gt=0,
                                     description="a peer connection not connected by then is closed")
    max_subscriptions: int = Field(default=200, ge=1, description="open SSE/WebSocket streams in all")
    max_subscriptions_per_call: int = Field(default=20, ge=1, description="open streams of one call")
    max_subscriptions_per_client: int = Field(default=10, ge=1,
                                              description="open streams of one client address")
    redis_write_connections: int = Field(default=20, ge=1,
                                         description="Redis pool of transcripts, call keys and /readyz")
    shutdown_grace_s: float = Field(default=10.0, gt=0,
                                    description="SIGTERM/SIGINT: calls end and the process exits within this")

    @field_validator("ice_host_addresses")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must name at least one entry")
        return value

    def secret(self) -> bytes:
        """The token signing key (set by :func:`ensure_secret` when not configured)."""
        assert self.token_secret is not None, "ensure_secret() was not called"
        return self.token_secret.get_secret_value().encode()


def ensure_secret(settings: StreamerSettings) -> StreamerSettings:
    """Fill in a random token secret when none is configured (tokens then die with the process)."""
    if settings.token_secret is not None:
        return settings
    log.warning("CBERL_TOKEN_SECRET is not set: using a random secret, so join tokens will "
                "not survive a restart of this process")
    return settings.model_copy(update={"token_secret": SecretStr(secrets.token_urlsafe(32))})
