"""Prometheus metrics of one gateway process (its own registry, served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS_S = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_RTF_BUCKETS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0)


class StreamerMetrics:
    """The gateway's counters, gauges and histograms; one instance per app (tests make many)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active_calls = Gauge("streamer_active_calls", "Calls not yet ended", registry=r)
        self.active_participants = Gauge("streamer_active_participants",
                                         "Participants with a live connection", registry=r)
        self.utterance_latency = Histogram(
            "streamer_utterance_latency_seconds",
            "End of speech (wall clock of the last speech sample) to the broker's ack",
            buckets=_LATENCY_BUCKETS_S, registry=r)
        self.asr_rtf = Histogram("streamer_asr_real_time_factor",
                                 "ASR compute time / audio duration per utterance",
                                 buckets=_RTF_BUCKETS, registry=r)
        self.dropped_audio_frames = Counter(
            "streamer_dropped_audio_frames_total",
            "20 ms audio frames that never arrived (filled with silence)", registry=r)
        self.dropped_video_frames = Counter(
            "streamer_dropped_video_frames_total",
            "Sampled video frames discarded because the utterance already held its maximum",
            registry=r)
        self.utterances = Counter("streamer_utterances_total", "Utterances by outcome",
                                  ["outcome"], registry=r)
        self.publish_backlog = Gauge("streamer_publish_backlog",
                                     "Events waiting for the broker", registry=r)
        self.publish_dropped = Counter("streamer_publish_dropped_total",
                                       "Events dropped because the publish backlog was full",
                                       registry=r)
        self.publish_failed = Counter("streamer_publish_failed_total",
                                      "Events that could not be serialized or sent (skipped)",
                                      registry=r)
        # -- ASR load and admission (streamer/analyzer.py, streamer/capacity.py) ---------
        self.asr_backlog = Gauge("streamer_asr_backlog_seconds",
                                 "Seconds of audio queued for ASR or being transcribed", registry=r)
        self.loop_lag = Gauge("streamer_event_loop_lag_seconds",
                              "Median delay of a 100 ms event-loop timer over the last 3 s", registry=r)
        self.asr_utilization = Gauge("streamer_asr_utilization",
                                     "Busy share of the ASR thread over the last 10 s", registry=r)
        self.admission_refused = Counter("streamer_admission_refused_total",
                                         "New calls and joins refused at capacity (503)", ["reason"],
                                         registry=r)
        self.asr_degraded = Gauge("streamer_asr_degraded",
                                  "1 while ASR runs degraded (shorter window) for its backlog", registry=r)
        self.asr_degraded_segments = Counter(
            "streamer_asr_degraded_segments_total",
            "Segments transcribed degraded (shorter encoder window) because of the backlog", registry=r)
        self.asr_batch_size = Histogram("streamer_asr_batch_size", "Segments per Whisper call",
                                        buckets=(1, 2, 4, 8, 16, 32), registry=r)
        self.asr_speculation = Counter(
            "streamer_asr_speculation_total",
            "Segments transcribed when silence began: used (the segment closed as guessed) or wasted",
            ["outcome"], registry=r)
