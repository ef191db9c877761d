"""The worker's one typed config object: :class:`contracts.settings.SharedSettings` plus
what only a worker needs; env (``CBERL_*``) first, flags override.

``broker_profile`` switches the faust settings the local tansu broker needs (DESIGN.md,
"tansu 0.6.0 facts") on and off; :meth:`WorkerSettings.faust_settings` is the only place
that turns this object into faust's keyword arguments.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from contracts.settings import SharedSettings


class WorkerSettings(SharedSettings):
    """Everything a recognizer worker needs; see ``docs/workers.md`` for each field."""

    app_id: str = Field("cberl-recognizer", description="consumer group shared by all workers")
    create_topics: bool = Field(True, description="create missing topics before starting")
    device: str = Field("auto", description="model device: auto | cpu | cuda | cuda:N")

    # -- processing -------------------------------------------------------------------
    max_batch: int = Field(64, ge=1, description="events per micro-batch (stream.take)")
    batch_within_s: float = Field(0.01, gt=0, description="longest wait to fill a micro-batch")
    gap_timeout_s: float = Field(5.0, gt=0, description="wait for a missing seq before skipping it")
    max_pending: int = Field(64, ge=1, description="early utterances held per call while a seq is missing")
    redis_retry_max_s: float = Field(5.0, gt=0, description="longest back-off between Redis retries")
    require_known_calls: bool = Field(
        True, description="dead-letter utterances of calls the streamer never created "
                          "(no cberl:call:{id} key in Redis)")

    # -- broker tuning (profile defaults when unset) ----------------------------------
    fetch_max_wait_ms: int | None = Field(None, ge=1, description="tansu: 20, kafka: 500")

    # -- operations -------------------------------------------------------------------
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port; 0 = off")
    metrics_host: str = Field("127.0.0.1", description="address /metrics binds (0.0.0.0 in a pod)")
    group_instance_id: str | None = Field(
        None, description="static group membership (KIP-345): a worker that comes back under "
                          "the same id takes its partitions over at once instead of waiting "
                          "for the dead member's session to time out; unique per live worker")

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
        security = self.kafka_security()
        if security.get("security_protocol", "").startswith("SASL_"):
            import faust

            conf["broker_credentials"] = faust.SASLCredentials(
                username=security["sasl_plain_username"], password=security["sasl_plain_password"],
                mechanism=security["sasl_mechanism"], ssl_context=security.get("ssl_context"))
        elif "ssl_context" in security:
            import faust

            conf["broker_credentials"] = faust.SSLCredentials(security["ssl_context"])
        return conf

    def masked(self) -> dict[str, Any]:
        """The settings as printed at start: secrets masked, profile defaults filled in."""
        data = super().masked()
        data["fetch_max_wait_ms"] = self.effective_fetch_max_wait_ms
        return data
