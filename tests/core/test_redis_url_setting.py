"""A mistyped Redis URL is one ``error:`` line naming the setting, from every process that reads
one, never a traceback and never the value (a Redis URL may carry a password)."""

from __future__ import annotations

import pytest

from loravet.cli import main as loravet_main

BAD = "redis-host:6379/0:secretpass"


@pytest.mark.parametrize(
    ("argv", "env", "setting"),
    [
        (["worker", "--redis-url", BAD], {}, "LORAVET_WORKER_REDIS_URL"),
        (["zoo", "worker", "--redis-url", BAD], {}, "LORAVET_WORKER_REDIS_URL"),
        (
            ["api", "--port", "0"],
            {"LORAVET_API_REDIS_URL": BAD, "LORAVET_API_KEYS": "k" * 24},
            "LORAVET_API_REDIS_URL",
        ),
    ],
)
def test_a_bad_redis_url_is_one_line_without_the_value(
    argv: list[str],
    env: dict[str, str],
    setting: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert loravet_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert f"{setting}: not a Redis URL; accepted: redis://" in err
    assert "secretpass" not in err
