"""A content-addressed store shared by the API and the workers: adapters, configs and reports.

Why content addressing: the same bytes are stored once, a key says what it holds (its sha256), and a
key can be checked before it touches the filesystem. Keys are 64 lowercase hex digits and kinds come
from a fixed list (:func:`check_location`, the one check every backend runs), so no client-controlled
name ever becomes a path or an object name, and every write is whole: a reader sees all of a blob or
none of it, and a crash leaves no half-written report.

Two backends behind one small protocol: :class:`LocalContentStore` (a directory, the default; API and
workers on one machine or a shared filesystem) and ``core.s3_content_store.S3ContentStore`` (an
S3-compatible object store such as MinIO, for API and workers on different machines sharing only
Redis and the bucket). :func:`open_content_store` picks one from the processes' settings
(:class:`ContentStoreSettings`), so the API and the workers can never disagree on how to read them.

No torch, and no boto3 unless the S3 backend is selected: the API imports this module.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator, model_validator

from core.contracts import is_sha256_hex

Kind = Literal["adapters", "configs", "reports", "predictor-files", "predictor-sets", "zoo-files"]
KINDS: tuple[Kind, ...] = (
    "adapters",
    "configs",
    "reports",
    "predictor-files",
    "predictor-sets",
    "zoo-files",
)
"""Uploads and their reports; the predictor sets workers load (``core.predictor_sets``); the files
of zoo LoRAs built by distributed workers (``zoo.distributed_build``)."""

SUFFIXES: dict[str, str] = {
    "adapters": ".safetensors",
    "configs": ".json",
    "reports": ".json",
    "predictor-files": ".bin",
    "predictor-sets": ".json",
    "zoo-files": ".bin",
}
"""File-name ending per kind, the same in every backend (a blob's name says what it holds)."""


class StoreUnavailableError(OSError):
    """The store cannot be used right now: unreachable, refusing this process's credentials, or
    misconfigured (no such bucket).

    Why a type of its own: it is never the client's fault and never a missing blob, so the API
    answers 503 (retry later) instead of 404 or 500, and workers treat it as a transient fault and
    retry. The message names what failed (endpoint, bucket, operation) for the operator's log and
    never carries a secret.
    """


class StoreAccessDeniedError(StoreUnavailableError):
    """The store answered but refused the credentials (unknown key id, wrong secret, no permission,
    or none configured): an operator's fix, reported apart from a network fault."""


def check_location(kind: str, key: str) -> None:
    """The one check of every backend before a name is built from ``(kind, key)``.

    Raises:
        ValueError: ``kind`` is not one of :data:`KINDS`, or ``key`` is not a sha256 hex digest.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown store kind {kind!r}; accepted: {', '.join(KINDS)}")
    if not is_sha256_hex(key):
        raise ValueError("store keys are sha256 digests (64 lowercase hex characters)")


def relative_name(kind: Kind, key: str) -> str:
    """``<kind>/<key[:2]>/<key><suffix>``: the layout both backends use (a path under the local
    root, an object name under the S3 prefix), after :func:`check_location`."""
    check_location(kind, key)
    return f"{kind}/{key[:2]}/{key}{SUFFIXES[kind]}"


class ContentStore(Protocol):
    """Blobs by (kind, sha256-shaped key). Missing blobs raise ``FileNotFoundError``, bad names
    ``ValueError``, an unusable store :class:`StoreUnavailableError`."""

    def check(self) -> None:
        """Raise :class:`StoreUnavailableError` unless the store can be written now (``/readyz``)."""
        ...

    def exists(self, kind: Kind, key: str) -> bool: ...

    def get_bytes(self, kind: Kind, key: str) -> bytes: ...

    def put_bytes(self, kind: Kind, key: str, data: bytes) -> None: ...

    def put_file(self, kind: Kind, key: str, source: Path) -> None:
        """Store a finished temporary file (from :meth:`temporary_file`) under ``key``; the file is
        consumed (moved, or uploaded and removed)."""
        ...

    def temporary_file(self) -> Path:
        """A fresh local file, for streaming an upload before its key is known."""
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
        path = self.root / relative_name(kind, key)
        if (
            self.root not in path.resolve().parents
        ):  # belt and braces: a symlinked subdir must not lead out
            raise ValueError("store path escapes the store root")
        return path

    def check(self) -> None:
        """The root and its upload directory exist and are writable."""
        for folder in (self.root, self.root / "tmp"):
            if not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
                raise StoreUnavailableError(
                    f"content store directory {folder} is missing or not writable"
                )

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


_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_SETTING_NAMES = "LORAVET_API_* / LORAVET_WORKER_*"


class ContentStoreSettings(BaseModel):
    """The store settings of every process type, declared and validated once: mixed into the API's
    and the workers' settings (``LORAVET_API_S3_BUCKET``, ``LORAVET_WORKER_S3_BUCKET``, ...), so
    both read the same store the same way."""

    # a settings error must not print the secret key it was given (pydantic shows the input)
    model_config = ConfigDict(hide_input_in_errors=True)

    store_backend: Literal["local", "s3"] = "local"
    """``local``: the directory ``storage_dir``, shared by every process (one machine, or a shared
    filesystem). ``s3``: an S3-compatible bucket (API and workers on different machines)."""
    storage_dir: Path = Path("var/store")
    """``local``: the store itself. ``s3``: local scratch space (``tmp/``) for uploads being
    received; never shared, so each machine may use its own."""
    s3_endpoint_url: str | None = None
    """The object store's URL, e.g. ``http://minio:9000``; unset: AWS S3 itself (from the region)."""
    s3_bucket: str = ""
    """Required with ``store_backend=s3``; created beforehand (loravet never creates buckets)."""
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    """With ``s3_secret_access_key``; both unset: boto3's own chain (``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY``, ``~/.aws``, an instance role)."""
    s3_secret_access_key: SecretStr | None = None
    s3_prefix: str = ""
    """Object names start with this (``loravet/`` gives ``loravet/reports/ab/ab12....json``), so one
    bucket can hold several instances."""

    @field_validator("s3_endpoint_url", "s3_access_key_id", "s3_secret_access_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """``LORAVET_..._S3_ENDPOINT_URL=`` (compose's way of passing nothing) means unset."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/?#@]+(/[^\s?#]*)?", value):
            raise ValueError(
                f"s3_endpoint_url must be an http:// or https:// URL without credentials, got {value!r}"
            )
        return value

    @field_validator("s3_prefix")
    @classmethod
    def _normalise_prefix(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return ""
        parts = value.strip("/").split("/")
        if value.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(
                f"s3_prefix is a relative object-name prefix such as 'loravet/' (no leading '/', "
                f"no empty, '.' or '..' segment), got {value!r}"
            )
        return "/".join(parts) + "/"

    @model_validator(mode="after")
    def _check_s3(self) -> ContentStoreSettings:
        if self.store_backend != "s3":
            return self
        if not self.s3_bucket:
            raise ValueError(
                f"store_backend is 's3' but no bucket is set: set S3_BUCKET ({_SETTING_NAMES})"
            )
        if not _BUCKET_NAME.fullmatch(self.s3_bucket):
            raise ValueError(
                f"s3_bucket {self.s3_bucket!r} is not a valid bucket name "
                "(3-63 characters: lowercase letters, digits, '.' and '-')"
            )
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError(
                "set both S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY, or neither (boto3's own "
                f"credential chain) ({_SETTING_NAMES})"
            )
        return self


def open_content_store(settings: ContentStoreSettings) -> ContentStore:
    """The store the settings name: the one constructor the API and the workers use, so a process
    never reads a different store than the others of its deployment. Makes no network call (an
    unreachable object store at start-up shows as :class:`StoreUnavailableError` on first use, as
    an unreachable Redis does)."""
    if settings.store_backend == "local":
        return LocalContentStore(settings.storage_dir)
    from core.s3_content_store import S3ContentStore  # boto3 only in processes that use S3

    secret = settings.s3_secret_access_key
    return S3ContentStore(
        settings.s3_bucket,
        scratch_dir=settings.storage_dir / "tmp",
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=None if secret is None else secret.get_secret_value(),
        prefix=settings.s3_prefix,
    )
