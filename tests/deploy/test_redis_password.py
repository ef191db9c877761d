"""RedisServer with a password: clients without it are refused, the password is in a 0600
config file and never on the command line, and the readiness probe authenticates."""

from __future__ import annotations

import stat
from pathlib import Path

import psutil
import pytest
import redis

from deploy.services import RedisServer, free_port


def test_redis_server_requires_its_password(tmp_path: Path) -> None:
    password = "s3cret-Pass_word"
    with RedisServer(free_port(), tmp_path, password=password) as server:
        assert server.is_ready()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(server.url.replace(password, "wrong")).ping()
        client = redis.Redis.from_url(server.url)
        assert client.set("k", "v") and client.get("k") == b"v"
        client.close()
        assert password not in " ".join(psutil.Process(server.pid).cmdline())
        assert stat.S_IMODE(server.config_path.stat().st_mode) == 0o600
    # restarted on the same directory: same password, data back from the append-only file
    with RedisServer(server.port, tmp_path, password=password) as again:
        assert redis.Redis.from_url(again.url).get("k") == b"v"


def test_the_probe_is_not_ready_with_a_wrong_password(tmp_path: Path) -> None:
    with RedisServer(free_port(), tmp_path, password="right") as server:
        server.password = "wrong"
        assert not server.is_ready()
