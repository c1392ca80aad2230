"""A content-addressed store shared by the API and the workers: adapters, configs and reports.

Why content addressing: the same bytes are stored once, a key says what it holds (its sha256), and a
key can be checked before it touches the filesystem. Keys are 64 lowercase hex digits and kinds come
from a fixed list, so no client-controlled name ever becomes a path, and every write is atomic (a
temporary file in the same filesystem, fsync, then ``os.replace``): a reader sees all of a blob or
none of it, and a crash leaves no half-written report. The protocol is small so an object store
(S3, GCS) can implement it later; :class:`LocalContentStore` is the default.

Standard library only: the API imports this module and must never reach torch.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Literal, Protocol

from core.contracts import is_sha256_hex

Kind = Literal["adapters", "configs", "reports"]
KINDS: tuple[Kind, ...] = ("adapters", "configs", "reports")

_SUFFIX = {"adapters": ".safetensors", "configs": ".json", "reports": ".json"}


class ContentStore(Protocol):
    """Blobs by (kind, sha256-shaped key)."""

    def exists(self, kind: Kind, key: str) -> bool: ...

    def get_bytes(self, kind: Kind, key: str) -> bytes: ...

    def put_bytes(self, kind: Kind, key: str, data: bytes) -> None: ...

    def put_file(self, kind: Kind, key: str, source: Path) -> None:
        """Move a finished temporary file (from :meth:`temporary_file`) into place."""
        ...

    def temporary_file(self) -> Path:
        """A fresh file on the same filesystem, for streaming an upload before its key is known."""
        ...


class LocalContentStore:
    """A directory: ``<root>/<kind>/<key[:2]>/<key><suffix>``, plus ``<root>/tmp`` for uploads."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        for kind in KINDS:
            (self.root / kind).mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)

    def path_for(self, kind: Kind, key: str) -> Path:
        """Where a blob lives. Raises ``ValueError`` for an unknown kind or a key that is not a sha256."""
        if kind not in KINDS:
            raise ValueError(f"unknown store kind {kind!r}; accepted: {', '.join(KINDS)}")
        if not is_sha256_hex(key):
            raise ValueError("store keys are sha256 digests (64 lowercase hex characters)")
        path = self.root / kind / key[:2] / f"{key}{_SUFFIX[kind]}"
        if (
            self.root not in path.resolve().parents
        ):  # belt and braces: a symlinked subdir must not lead out
            raise ValueError("store path escapes the store root")
        return path

    def exists(self, kind: Kind, key: str) -> bool:
        return self.path_for(kind, key).is_file()

    def get_bytes(self, kind: Kind, key: str) -> bytes:
        """Raises ``FileNotFoundError`` when the blob is absent."""
        return self.path_for(kind, key).read_bytes()

    def temporary_file(self) -> Path:
        fd, name = tempfile.mkstemp(dir=self.root / "tmp", prefix="upload-", suffix=".part")
        os.close(fd)
        return Path(name)

    def put_bytes(self, kind: Kind, key: str, data: bytes) -> None:
        tmp = self.temporary_file()
        try:
            with tmp.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self.put_file(kind, key, tmp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def put_file(self, kind: Kind, key: str, source: Path) -> None:
        dest = self.path_for(kind, key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with source.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(source, dest)
        _fsync_dir(dest.parent)


def _fsync_dir(path: Path) -> None:
    """Make the rename itself durable (POSIX); best effort where directories cannot be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
