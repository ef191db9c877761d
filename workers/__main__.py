"""``python -m workers``: start one worker (run several to share the partitions).

Settings come from ``CBERL_*`` variables, flags override them; the effective config is
printed first (passwords masked). User errors (bad flag value, model directory, broker or
Redis unreachable) end with one line on stderr and exit status 2.
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import Future
from typing import Any

import faust
import redis
import redis.asyncio as aioredis

from cberl_model.artifact import ModelError
from cberl_model.inference import EmotionRecognizer
from cberl_model.runtime import ConfigError
from contracts.cli import UserError, load_settings, run_cli
from contracts.logs import logging_config, setup_logging
from contracts.standby import block_promotion, wait_as_standby
from contracts.topics import ensure_topics
from workers.agents import TopicSink, register_agents
from workers.app import create_app
from workers.metrics import WorkerMetrics
from workers.processor import BatchProcessor
from workers.settings import WorkerSettings
from workers.state import CallStore

log = logging.getLogger("workers")


async def check_backends(settings: WorkerSettings) -> None:
    """Fail fast with one line when the broker or Redis cannot be reached; create topics."""
    if settings.create_topics:
        servers = settings.broker_bootstrap_servers
        try:
            await asyncio.wait_for(ensure_topics(servers, settings.topic_partitions(),
                                                 **settings.kafka_security()), timeout=20)
        except Exception as exc:
            raise UserError(f"broker {servers} unreachable or refused the topics: "
                            f"{type(exc).__name__}: {exc}") from None
    client = aioredis.Redis.from_url(str(settings.redis_url), socket_connect_timeout=3)
    try:
        await client.ping()
    except (redis.RedisError, OSError) as exc:
        raise UserError(f"redis {settings.masked()['redis_url']} unreachable: {exc}") from None
    finally:
        await client.aclose()


def _encoder_built(build: Future[Any]) -> None:
    """Say when the deferred text encoder is there, or loudly that it could not be built
    (events without a text vector then fail with the same error)."""
    if build.exception() is None:
        log.info("text encoder ready (used for events that come without a text vector)")
    else:
        log.error("cannot build the model's text encoder: %s", build.exception())


def build_worker(settings: WorkerSettings) -> faust.Worker:
    """Load the model, wire store, sink, processor and agents into a faust Worker."""
    try:
        recognizer = EmotionRecognizer.load(settings.model_dir, device=settings.device,
                                            defer_encoder=True,
                                            precision=settings.encoder_precision)
    except (ModelError, ConfigError) as exc:
        raise UserError(f"cannot load the model from {settings.model_dir or 'the default model'}: "
                        f"{type(exc).__name__}: {exc}") from None
    log.info("model %r on %s", recognizer, recognizer.device)
    if recognizer.artifact.pending_encoder is not None:
        recognizer.artifact.pending_encoder.add_done_callback(_encoder_built)
    metrics = WorkerMetrics()
    app = create_app(settings)
    sink = TopicSink(app.topic(settings.emotions_topic, key_serializer="raw", value_serializer="raw"),
                     app.topic(settings.dead_letter_topic, key_serializer="raw", value_serializer="raw"))
    client = aioredis.Redis.from_url(str(settings.redis_url), socket_timeout=5, socket_connect_timeout=3)
    store = CallStore(client, settings.call_stream_ttl_s, settings.call_stream_maxlen,
                      settings.redis_retry_max_s, metrics)
    register_agents(app, settings, BatchProcessor(recognizer, store, sink, settings, metrics), metrics)
    if settings.standby_ready_file is not None:
        wait_as_standby(settings.standby_ready_file, "join the group")
    if settings.metrics_port:
        try:
            metrics.serve(settings.metrics_port, settings.metrics_host)
        except OSError as exc:
            raise UserError(f"metrics port {settings.metrics_host}:{settings.metrics_port}: {exc}") from None
    return faust.Worker(app, loglevel=settings.log_level,
                        logging_config=logging_config(settings.log_level, settings.log_json))


def main() -> int:
    settings = load_settings(WorkerSettings)
    if settings.standby_ready_file is not None:  # before anything slow
        block_promotion()
    setup_logging(settings.log_level, settings.log_json)
    print(json.dumps({"effective_config": settings.masked()}), flush=True)
    asyncio.run(check_backends(settings))
    worker = build_worker(settings)
    worker.execute_from_commandline()  # runs until SIGTERM/SIGINT; exits the process itself
    return 0


if __name__ == "__main__":
    run_cli(main)
