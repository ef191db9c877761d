"""The child-process services: start, answer, clear errors, restart, idempotent topics."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
import redis
from aiokafka.admin import AIOKafkaAdminClient

from contracts.topics import ensure_topics
from deploy.services import RedisServer, ServiceError, TansuBroker, free_port


def test_redis_fixture_answers_and_persists_across_restart(tmp_path: Path) -> None:
    server = RedisServer(free_port(), tmp_path)
    with server:
        redis.Redis.from_url(server.url).set("k", "v")
    assert not server.running
    with server:
        assert redis.Redis.from_url(server.url).get("k") == b"v"


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ServiceError, match=f"port 127.0.0.1:{port} is already in use"):
            RedisServer(port, tmp_path).start()


def test_failed_start_shows_output_tail(tmp_path: Path) -> None:
    class BadRedis(RedisServer):
        def command(self) -> list[str]:
            return [*super().command(), "--no-such-option", "x"]

    with pytest.raises(ServiceError, match=r"(?s)exited with status 1 .*output tail:.*no-such-option"):
        BadRedis(free_port(), tmp_path, startup_timeout_s=10).start()


def test_ensure_topics_is_idempotent(tansu_broker: TansuBroker) -> None:
    topics = {"svc-test-a": 3, "svc-test-b": 1}
    asyncio.run(ensure_topics(tansu_broker.bootstrap_servers, topics))
    asyncio.run(ensure_topics(tansu_broker.bootstrap_servers, topics))

    async def describe() -> dict[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=tansu_broker.bootstrap_servers)
        await admin.start()
        try:
            described = await admin.describe_topics(list(topics))
        finally:
            await admin.close()
        return {t["topic"]: len(t["partitions"]) for t in described}

    assert asyncio.run(describe()) == topics
