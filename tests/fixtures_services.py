"""Session fixtures: a real tansu broker and a real redis-server on 127.0.0.1.

Registered from ``tests/conftest.py`` (``pytest_plugins``). Each runs once per test
session on a free port with its own temporary directory; tests that need a private
instance (to kill or restart it) build their own :class:`workers.services.RedisServer`
or :class:`workers.services.TansuBroker` the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from workers.services import RedisServer, TansuBroker, free_port


@pytest.fixture(scope="session")
def tansu_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """A memory-only tansu broker; ``.bootstrap_servers`` is ``127.0.0.1:PORT``."""
    with TansuBroker(free_port(), tmp_path_factory.mktemp("tansu")) as broker:
        yield broker


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server with an append-only file; ``.url`` is ``redis://127.0.0.1:PORT/0``."""
    with RedisServer(free_port(), tmp_path_factory.mktemp("redis")) as server:
        yield server
