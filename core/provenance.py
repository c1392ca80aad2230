"""Where a result came from: git sha (and whether the tree was dirty), package versions, machine.

Written into every checkpoint ``meta.json`` and every benchmark result, so a figure can be traced.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

PACKAGES = (
    "torch",
    "numpy",
    "scipy",
    "peft",
    "transformers",
    "safetensors",
    "scikit-learn",
    "loravet",
)


def git_state(cwd: str | Path | None = None) -> dict[str, object]:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=cwd,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        return {"git_sha": None, "git_dirty": None}
    return {"git_sha": sha, "git_dirty": dirty}


def package_versions(
    names: tuple[str, ...] = PACKAGES, missing: str | None = None
) -> dict[str, str | None]:
    """Installed versions of ``names`` read from package metadata (nothing is imported), ``missing``
    for a package that is not installed."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = missing
    return out


def machine() -> dict[str, object]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, read in 1 MiB blocks (zoo adapters, manifests, predictor files)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def provenance(data: Mapping[str, str] | None = None) -> dict[str, object]:
    """When and from what a result was made; ``data``: digests of its inputs (for a zoo,
    ``zoo.zoo_manifest.zoo_digests``)."""
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **git_state(Path(__file__).resolve().parent),
        "packages": package_versions(),
        "machine": machine(),
        **(data or {}),
    }
