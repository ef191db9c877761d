"""The worker's one typed config object: env (``CBERL_*``), then CLI flags over it.

``broker_profile`` switches the faust settings the local tansu broker needs (DESIGN.md,
"tansu 0.6.0 facts") on and off; ``faust_settings()`` is the only place that turns this
object into faust's keyword arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.events import DEAD_LETTER_TOPIC, EMOTIONS_TOPIC, UTTERANCES_TOPIC


class WorkerSettings(BaseSettings):
    """Everything a recognizer worker needs; see ``docs/workers.md`` for each field."""

    model_config = SettingsConfigDict(env_prefix="CBERL_", extra="forbid")

    # -- where ------------------------------------------------------------------------
    broker_bootstrap_servers: str = Field(
        "127.0.0.1:9092", pattern=r"^[^\s,:/]+:\d+(,[^\s,:/]+:\d+)*$",
        description="Kafka bootstrap servers host:port[,host:port...]; same setting as the streamer's")
    broker_profile: Literal["tansu", "kafka"] = "tansu"
    redis_url: str = "redis://127.0.0.1:6379/0"
    app_id: str = Field("cberl-recognizer", description="consumer group shared by all workers")
    utterances_topic: str = UTTERANCES_TOPIC
    emotions_topic: str = EMOTIONS_TOPIC
    dead_letter_topic: str = DEAD_LETTER_TOPIC
    partitions: int = Field(8, ge=1, description="partitions of utterances/emotions when created")
    create_topics: bool = Field(True, description="create missing topics before starting")

    # -- model ------------------------------------------------------------------------
    model_dir: Path | None = Field(None, description="model directory; default: the bundled model")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")

    # -- processing -------------------------------------------------------------------
    max_batch: int = Field(64, ge=1, description="events per micro-batch (stream.take)")
    batch_within_s: float = Field(0.01, gt=0, description="longest wait to fill a micro-batch")
    call_ttl_s: int = Field(3600, ge=1, description="idle call state (and its stream) expires after")
    gap_timeout_s: float = Field(5.0, gt=0, description="wait for a missing seq before skipping it")
    max_pending: int = Field(64, ge=1, description="early utterances held per call while a seq is missing")
    emotion_stream_maxlen: int = Field(10_000, ge=1, description="approximate cap of each call's stream")
    redis_retry_max_s: float = Field(5.0, gt=0, description="longest back-off between Redis retries")

    # -- broker tuning (profile defaults when unset) ----------------------------------
    fetch_max_wait_ms: int | None = Field(None, ge=1, description="tansu: 20, kafka: 500")

    # -- operations -------------------------------------------------------------------
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port; 0 = off")
    metrics_host: str = Field("127.0.0.1", description="address /metrics binds (0.0.0.0 in a pod)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = False

    @model_validator(mode="after")
    def _distinct_topics(self) -> WorkerSettings:
        names = [self.utterances_topic, self.emotions_topic, self.dead_letter_topic]
        if len(set(names)) != 3:
            raise ValueError(f"topic names must differ, got {names}")
        return self

    @property
    def effective_fetch_max_wait_ms(self) -> int:
        if self.fetch_max_wait_ms is not None:
            return self.fetch_max_wait_ms
        return 20 if self.broker_profile == "tansu" else 500

    @property
    def faust_broker(self) -> str:
        """The bootstrap servers as faust's broker URL list (``kafka://h1:p1;kafka://h2:p2``)."""
        return ";".join(f"kafka://{server}" for server in self.broker_bootstrap_servers.split(","))

    def faust_settings(self) -> dict[str, Any]:
        """Keyword arguments for :class:`faust.App` (the broker profile applied)."""
        conf: dict[str, Any] = {
            "broker": self.faust_broker,
            "store": "memory://",  # all state is in Redis, none in faust tables
            "web_enabled": False,  # our /metrics is prometheus_client's, on 127.0.0.1
            "topic_disable_leader": True,  # no __assignor-__leader topic: no tables to assign
            "topic_allow_declare": False,  # topics are created up front (ensure_topics)
            "consumer_auto_offset_reset": "earliest",  # a new group misses nothing already sent
            "topic_partitions": self.partitions,
        }
        if self.broker_profile == "tansu":
            conf.update(producer_max_batch_size=1, broker_session_timeout=6,
                        broker_heartbeat_interval=1)
        return conf

    def masked(self) -> dict[str, Any]:
        """The settings as printed at start: passwords in URLs replaced by ``***``."""
        data = self.model_dump(mode="json")
        data["redis_url"] = _mask_url(self.redis_url)
        data["fetch_max_wait_ms"] = self.effective_fetch_max_wait_ms
        return data


def _mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.hostname or ""
    netloc = f"{user}***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
