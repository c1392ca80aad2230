"""The content store on an S3-compatible object store (MinIO, Ceph, AWS S3, ...).

Why: with a local directory the API and the workers must share a filesystem. With a bucket they
share nothing but Redis and the object store, so API hosts and GPU worker hosts can be separate
machines. The layout is the local store's (``<prefix><kind>/<key[:2]>/<key><suffix>``) and names are
checked by the same :func:`core.content_store.check_location`, so no client-controlled string ever
becomes an object name.

What it guarantees, as the local store does:

* writes are whole objects (S3 never shows half of a PUT), and idempotent: adapters and configs are
  named by the sha256 of their bytes, so one already there is not uploaded again; reports are
  overwritten, as the local store's ``os.replace`` does;
* uploads stream from the temporary file in parts (``upload_file``, multipart above
  :data:`MULTIPART_CHUNK_BYTES`), so an upload is never held in memory whole;
* a missing object raises ``FileNotFoundError``; an unreachable store, refused credentials or a
  missing bucket raise :class:`~core.content_store.StoreUnavailableError` (credentials:
  :class:`~core.content_store.StoreAccessDeniedError`) with the endpoint, bucket and operation in
  the message and never the secret key.

Opened through :func:`core.content_store.open_content_store`; imported only when ``store_backend``
is ``s3``, so processes on the local store never load boto3.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn, cast

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)

from core.content_store import (
    Kind,
    StoreAccessDeniedError,
    StoreUnavailableError,
    relative_name,
)

MULTIPART_CHUNK_BYTES = 8 * 1024 * 1024
"""Part size of streamed uploads (S3's minimum is 5 MiB); files above it go up in parts."""
MULTIPART_CONCURRENCY = 4
"""Parts in flight at once: bounds an upload's memory to about this many parts."""

_CONTENT_ADDRESSED: frozenset[str] = frozenset(
    {"adapters", "configs", "predictor-files", "predictor-sets", "zoo-files"}
)
"""Kinds whose key is the sha256 of their bytes: an object already stored under it is identical."""
_CONTENT_TYPES = {
    "adapters": "application/octet-stream",
    "configs": "application/json",
    "predictor-files": "application/octet-stream",
    "predictor-sets": "application/json",
    "zoo-files": "application/octet-stream",
}
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
_REFUSED = frozenset(
    {
        "403",
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidClientTokenId",
        "InvalidToken",
        "ExpiredToken",
        "AuthorizationHeaderMalformed",
    }
)


class S3ContentStore:
    """Blobs as objects ``<prefix><kind>/<key[:2]>/<key><suffix>`` in one bucket; uploads are
    received into ``scratch_dir`` (local disk) before their sha256 is known."""

    def __init__(
        self,
        bucket: str,
        *,
        scratch_dir: str | Path,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        prefix: str = "",
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        max_attempts: int = 3,
        multipart_chunk_bytes: int = MULTIPART_CHUNK_BYTES,
    ) -> None:
        """Builds the client only (no network call): a store down at start-up fails on first use.

        ``access_key_id`` and ``secret_access_key`` both ``None``: boto3's own credential chain.
        The secret lives only inside boto3's client: never in this object's attributes, repr or
        error messages.
        """
        if not bucket:
            raise ValueError("an S3 content store needs a bucket name")
        if prefix and (prefix.startswith("/") or not prefix.endswith("/")):
            raise ValueError(
                f"prefix must be empty or end with '/' and not start with it: {prefix!r}"
            )
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.region = region
        self.access_key_id = access_key_id
        self.scratch_dir = Path(scratch_dir).resolve()
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "connect_timeout": connect_timeout_s,
            "read_timeout": read_timeout_s,
            "retries": {"mode": "standard", "max_attempts": max_attempts},
            "signature_version": "s3v4",
        }
        if endpoint_url is not None:
            # MinIO and most self-hosted stores serve buckets under the path, not as subdomains
            config["s3"] = {"addressing_style": "path"}
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
        )
        self._client: Any = session.client("s3", endpoint_url=endpoint_url, config=Config(**config))
        self._transfer = TransferConfig(
            multipart_threshold=multipart_chunk_bytes,
            multipart_chunksize=multipart_chunk_bytes,
            max_concurrency=MULTIPART_CONCURRENCY,
        )

    def __repr__(self) -> str:
        return f"S3ContentStore(endpoint={self.where!r}, bucket={self.bucket!r}, prefix={self.prefix!r})"

    @property
    def where(self) -> str:
        """The endpoint, as error messages name it."""
        return self.endpoint_url or f"AWS S3 ({self.region})"

    def object_name(self, kind: Kind, key: str) -> str:
        """The object a blob lives in. Raises ``ValueError`` for an unknown kind or a key that is not
        a sha256 (the local store's check)."""
        return self.prefix + relative_name(kind, key)

    # -- the ContentStore protocol
    def check(self) -> None:
        """The bucket answers with these credentials (one HEAD request)."""
        with self._translated("HEAD bucket", self.prefix or "/"):
            self._client.head_bucket(Bucket=self.bucket)

    def exists(self, kind: Kind, key: str) -> bool:
        name = self.object_name(kind, key)
        try:
            with self._translated("HEAD", name):
                self._client.head_object(Bucket=self.bucket, Key=name)
        except FileNotFoundError:
            return False
        return True

    def get_bytes(self, kind: Kind, key: str) -> bytes:
        """Raises ``FileNotFoundError`` when the object is absent."""
        name = self.object_name(kind, key)
        with self._translated("GET", name):
            response = self._client.get_object(Bucket=self.bucket, Key=name)
            return cast(bytes, response["Body"].read())

    def put_bytes(self, kind: Kind, key: str, data: bytes) -> None:
        """One PUT (reports and configs are small); whole-object, so readers see old or new."""
        name = self.object_name(kind, key)
        if kind in _CONTENT_ADDRESSED and self.exists(kind, key):
            return
        with self._translated("PUT", name):
            self._client.put_object(
                Bucket=self.bucket, Key=name, Body=data, ContentType=_content_type(kind)
            )

    def put_file(self, kind: Kind, key: str, source: Path) -> None:
        """Stream ``source`` up (in parts when large), then remove it: the local store moves the
        file, so callers never have to tell the backends apart."""
        name = self.object_name(kind, key)
        if not (kind in _CONTENT_ADDRESSED and self.exists(kind, key)):
            with self._translated("upload", name):
                self._client.upload_file(
                    str(source),
                    self.bucket,
                    name,
                    ExtraArgs={"ContentType": _content_type(kind)},
                    Config=self._transfer,
                )
        with contextlib.suppress(FileNotFoundError):
            source.unlink()

    def temporary_file(self) -> Path:
        fd, name = tempfile.mkstemp(dir=self.scratch_dir, prefix="upload-", suffix=".part")
        os.close(fd)
        return Path(name)

    # -- errors
    @contextlib.contextmanager
    def _translated(self, operation: str, name: str) -> Iterator[None]:
        """botocore's exceptions as the protocol's: ``FileNotFoundError`` for a missing object,
        :class:`StoreAccessDeniedError` / :class:`StoreUnavailableError` for the rest."""
        try:
            yield
        except S3UploadFailedError as exc:
            # upload_file wraps the ClientError of a failed part in a message-only error
            if isinstance(exc.__context__, ClientError):
                self._raise_client_error(exc.__context__, operation, name)
            raise StoreUnavailableError(self._describe(operation, name, str(exc))) from exc
        except ClientError as exc:
            self._raise_client_error(exc, operation, name)
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise StoreAccessDeniedError(
                self._describe(
                    operation,
                    name,
                    "no usable credentials: set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY "
                    f"(LORAVET_API_* / LORAVET_WORKER_*) or AWS_ACCESS_KEY_ID ({type(exc).__name__})",
                )
            ) from exc
        except ParamValidationError:
            raise  # a bug here, not a store fault
        except BotoCoreError as exc:  # connection refused, DNS, timeouts, a reset mid-body
            raise StoreUnavailableError(
                self._describe(operation, name, f"the object store is not reachable: {exc}")
            ) from exc

    def _raise_client_error(self, exc: ClientError, operation: str, name: str) -> NoReturn:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "?"))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = str(error.get("Message") or "").strip()
        detail = f"{code}{f' (HTTP {status})' if status else ''}{f': {message}' if message else ''}"
        if code == "NoSuchBucket":
            raise StoreUnavailableError(
                self._describe(operation, name, f"the bucket does not exist ({detail})")
            ) from exc
        if code in _NOT_FOUND:
            raise FileNotFoundError(
                f"no object {name!r} in bucket {self.bucket!r} at {self.where}"
            ) from exc
        if code in _REFUSED:
            who = self.access_key_id or "from the AWS credential chain"
            raise StoreAccessDeniedError(
                self._describe(
                    operation, name, f"the credentials (access key id {who}) were refused: {detail}"
                )
            ) from exc
        raise StoreUnavailableError(self._describe(operation, name, detail)) from exc

    def _describe(self, operation: str, name: str, why: str) -> str:
        return f"S3 {operation} of {name!r} in bucket {self.bucket!r} at {self.where} failed: {why}"


def _content_type(kind: Kind) -> str:
    return _CONTENT_TYPES.get(kind, "application/json")
