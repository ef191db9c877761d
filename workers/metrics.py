"""Prometheus metrics of one worker, in their own registry (several apps per test process)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)


class WorkerMetrics:
    """The worker's counters, gauges and histograms; ``serve`` exposes ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("cberl_worker_events", "utterances-topic records processed, by kind",
                              ["kind"], registry=r)
        self.dead_lettered = Counter("cberl_worker_dead_lettered", "records sent to the dead-letter topic",
                                     ["reason"], registry=r)
        self.emitted = Counter("cberl_worker_emotion_events", "Emotion events emitted", registry=r)
        self.redis_errors = Counter("cberl_worker_redis_errors", "failed Redis attempts (retried)",
                                    registry=r)
        self.state_lost = Counter("cberl_worker_state_lost",
                                  "calls whose stored state was missing mid-call or unreadable", registry=r)
        self.gaps_skipped = Counter("cberl_worker_gaps_skipped", "missing seqs given up on", registry=r)
        self.batch_size = Histogram("cberl_worker_inference_batch_size", "utterances per inference call",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.latency = Histogram("cberl_worker_update_latency_seconds",
                                 "end of speech (or produced_at) to Emotion event emitted",
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r)
        self.active_calls = Gauge("cberl_worker_active_calls",
                                  "calls seen by this worker within the idle TTL, not ended", registry=r)
        self.consumer_lag = Gauge("cberl_worker_consumer_lag", "highwater minus position, per partition",
                                  ["partition"], registry=r)
        self.assigned_partitions = Gauge(
            "cberl_worker_assigned_partitions",
            "1 per utterances-topic partition assigned to this worker in the last rebalance "
            "(none before the first assignment)", ["partition"], registry=r)

    def set_assignment(self, partitions: Iterable[int]) -> None:
        """Replace the assigned partitions (faust's ``on_partitions_assigned`` signal)."""
        self.assigned_partitions.clear()
        for partition in partitions:
            self.assigned_partitions.labels(partition=str(partition)).set(1)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve ``/metrics`` on ``host``:``port`` (in a daemon thread)."""
        start_http_server(port, addr=host, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", host, port)
