"""The S3 content store against a real S3 server (moto's server mode in its own process, IAM
authentication on): the same contract as the local store, streamed multipart uploads, and clear
errors when the server is down or refuses the credentials. Nothing is mocked."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.content_store import (
    KINDS,
    ContentStore,
    ContentStoreSettings,
    LocalContentStore,
    StoreAccessDeniedError,
    StoreUnavailableError,
    open_content_store,
)
from core.s3_content_store import S3ContentStore
from harness.embedded_s3 import EmbeddedS3
from tests.core.test_content_store import BAD_LOCATIONS


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedS3]:
    with EmbeddedS3(tmp_path_factory.mktemp("s3")) as server:
        yield server


def s3_store(server: EmbeddedS3, scratch: Path, **overrides: str) -> S3ContentStore:
    """Through the factory, as the API and the workers open it; a fresh prefix per test."""
    values = {**server.settings(prefix=f"t-{uuid.uuid4().hex[:12]}/"), **overrides}
    store = open_content_store(ContentStoreSettings(**values, storage_dir=scratch))
    assert isinstance(store, S3ContentStore)
    return store


@pytest.fixture(params=["local", "s3"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> ContentStore:
    """Both backends, for the tests of the protocol's contract."""
    if request.param == "local":
        return open_content_store(ContentStoreSettings(storage_dir=tmp_path / "store"))
    return s3_store(request.getfixturevalue("s3_server"), tmp_path / "scratch")


def test_factory_defaults_to_the_local_store(tmp_path: Path) -> None:
    store = open_content_store(ContentStoreSettings(storage_dir=tmp_path / "store"))
    assert isinstance(store, LocalContentStore) and store.root == (tmp_path / "store").resolve()


def test_round_trip_of_every_kind(any_store: ContentStore, tmp_path: Path) -> None:
    for kind in KINDS:
        data = f"{kind} bytes".encode()
        key = sha(data)
        assert not any_store.exists(kind, key)
        any_store.put_bytes(kind, key, data)
        assert any_store.exists(kind, key)
        assert any_store.get_bytes(kind, key) == data

        temp = any_store.temporary_file()
        streamed = f"{kind} streamed".encode()
        temp.write_bytes(streamed)
        any_store.put_file(kind, sha(streamed), temp)
        assert not temp.exists()  # consumed, as the local store's move does
        assert any_store.get_bytes(kind, sha(streamed)) == streamed


def test_objects_use_the_local_layout_under_the_prefix(
    s3_server: EmbeddedS3, tmp_path: Path
) -> None:
    store = s3_store(s3_server, tmp_path / "scratch")
    data = b"adapter"
    store.put_bytes("adapters", sha(data), data)
    store.put_bytes("reports", sha(data), b"{}")
    listed = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix=store.prefix)
    names = sorted(o["Key"] for o in listed["Contents"])
    key = sha(data)
    assert names == [
        f"{store.prefix}adapters/{key[:2]}/{key}.safetensors",
        f"{store.prefix}reports/{key[:2]}/{key}.json",
    ]
    assert list((tmp_path / "scratch" / "tmp").iterdir()) == []


def test_puts_are_idempotent(any_store: ContentStore) -> None:
    data = b"the same adapter twice"
    key = sha(data)
    any_store.put_bytes("adapters", key, data)
    any_store.put_bytes("adapters", key, data)
    temp = any_store.temporary_file()
    temp.write_bytes(data)
    any_store.put_file("adapters", key, temp)
    assert not temp.exists()
    assert any_store.get_bytes("adapters", key) == data
    # a report is rewritten in place (a re-vetting replaces it), in both backends alike
    any_store.put_bytes("reports", key, b'{"v": 1}')
    any_store.put_bytes("reports", key, b'{"v": 2}')
    assert any_store.get_bytes("reports", key) == b'{"v": 2}'


def test_an_adapter_already_stored_is_not_uploaded_again(
    s3_server: EmbeddedS3, tmp_path: Path
) -> None:
    store = s3_store(s3_server, tmp_path / "scratch")
    data = b"adapter bytes"
    key = sha(data)
    store.put_bytes("adapters", key, data)
    client = s3_server.client()
    first = client.head_object(Bucket=s3_server.bucket, Key=store.object_name("adapters", key))
    store.put_bytes("adapters", key, data)
    temp = store.temporary_file()
    temp.write_bytes(data)
    store.put_file("adapters", key, temp)
    again = client.head_object(Bucket=s3_server.bucket, Key=store.object_name("adapters", key))
    assert again["LastModified"] == first["LastModified"] and again["ETag"] == first["ETag"]
    assert not temp.exists()


def test_put_file_streams_a_large_upload_in_parts(s3_server: EmbeddedS3, tmp_path: Path) -> None:
    chunk = 5 * 1024 * 1024  # S3's smallest part
    store = S3ContentStore(
        s3_server.bucket,
        scratch_dir=tmp_path / "scratch",
        endpoint_url=s3_server.url,
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
        prefix="stream/",
        multipart_chunk_bytes=chunk,
    )
    size = 24 * 1024 * 1024 + 12345
    temp = store.temporary_file()
    digest = hashlib.sha256()
    with temp.open("wb") as f:
        for _ in range(size // (1 << 20)):
            block = os.urandom(1 << 20)
            digest.update(block)
            f.write(block)
        tail = os.urandom(size % (1 << 20))
        digest.update(tail)
        f.write(tail)
    key = digest.hexdigest()

    tracemalloc.start()
    try:
        store.put_file("adapters", key, temp)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not temp.exists()
    # the upload went up in parts (a multipart ETag is "<md5>-<parts>") and was never in memory whole
    head = s3_server.client().head_object(
        Bucket=s3_server.bucket, Key=store.object_name("adapters", key)
    )
    assert head["ETag"].strip('"').endswith("-5")
    assert head["ContentLength"] == size
    assert peak < size // 2, f"peak Python allocation {peak} bytes for a {size}-byte upload"
    assert hashlib.sha256(store.get_bytes("adapters", key)).hexdigest() == key


def test_a_missing_object_is_file_not_found(any_store: ContentStore) -> None:
    key = sha(b"never stored")
    assert not any_store.exists("reports", key)
    with pytest.raises(FileNotFoundError):
        any_store.get_bytes("reports", key)


@pytest.mark.parametrize(("kind", "key"), BAD_LOCATIONS)
def test_bad_names_are_refused_before_any_request(
    any_store: ContentStore, tmp_path: Path, kind: str, key: str
) -> None:
    source = tmp_path / "source"
    source.write_bytes(b"x")
    with pytest.raises(ValueError):
        any_store.exists(kind, key)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        any_store.get_bytes(kind, key)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        any_store.put_bytes(kind, key, b"x")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        any_store.put_file(kind, key, source)  # type: ignore[arg-type]
    assert source.exists()


def test_server_down_is_store_unavailable(tmp_path: Path) -> None:
    server = EmbeddedS3(tmp_path / "s3").start()
    try:
        store = s3_store(server, tmp_path / "scratch")
        key = sha(b"x")
        store.put_bytes("configs", key, b"x")
        server.stop()
        temp = store.temporary_file()
        temp.write_bytes(b"adapter")
        calls = [
            ("HEAD", lambda: store.exists("adapters", key)),
            ("GET", lambda: store.get_bytes("configs", key)),
            ("PUT", lambda: store.put_bytes("reports", key, b"{}")),
            ("HEAD", lambda: store.put_file("adapters", key, temp)),  # the look before uploading
            ("upload", lambda: store.put_file("reports", key, temp)),
        ]
        for operation, call in calls:
            with pytest.raises(StoreUnavailableError) as caught:
                call()
            message = str(caught.value)
            assert not isinstance(caught.value, StoreAccessDeniedError | FileNotFoundError)
            assert isinstance(caught.value, OSError)
            assert f"S3 {operation} of" in message
            assert "not reachable" in message
            assert server.url in message and repr(server.bucket) in message
            assert server.secret_access_key not in message
        assert temp.exists()  # a failed upload leaves the file to its caller (which removes it)
    finally:
        server.kill()


@pytest.mark.parametrize(
    ("wrong", "code"),
    [("secret", "SignatureDoesNotMatch"), ("key_id", "InvalidAccessKeyId")],
)
def test_refused_credentials_are_a_clear_error(
    s3_server: EmbeddedS3, tmp_path: Path, wrong: str, code: str
) -> None:
    secret = (
        "wrong-secret-0123456789abcdefghijkl" if wrong == "secret" else s3_server.secret_access_key
    )
    key_id = "AKIAUNKNOWN000000000" if wrong == "key_id" else s3_server.access_key_id
    store = s3_store(
        s3_server, tmp_path / "scratch", s3_access_key_id=key_id, s3_secret_access_key=secret
    )
    key = sha(b"x")
    temp = store.temporary_file()
    temp.write_bytes(b"report")
    calls = [
        lambda: store.exists("reports", key),  # a HEAD answer has no body: only its 403
        lambda: store.get_bytes("reports", key),
        lambda: store.put_bytes("reports", key, b"{}"),
        lambda: store.put_file("reports", key, temp),
    ]
    for call in calls:
        with pytest.raises(StoreAccessDeniedError) as caught:
            call()
        message = str(caught.value)
        assert "credentials" in message and "refused" in message
        assert f"access key id {key_id}" in message
        assert s3_server.url in message and repr(s3_server.bucket) in message
        assert secret not in message and s3_server.secret_access_key not in message
    assert code in str(caught.value)  # the last call (an upload) names the store's error code


def test_a_missing_bucket_is_store_unavailable(s3_server: EmbeddedS3, tmp_path: Path) -> None:
    store = s3_store(s3_server, tmp_path / "scratch", s3_bucket="no-such-bucket")
    with pytest.raises(StoreUnavailableError, match="the bucket does not exist"):
        store.put_bytes("reports", sha(b"x"), b"{}")
    with pytest.raises(StoreUnavailableError, match="no-such-bucket"):
        store.get_bytes("reports", sha(b"x"))


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"store_backend": "s3"}, "no bucket is set"),
        ({"store_backend": "s3", "s3_bucket": "Bad_Bucket"}, "not a valid bucket name"),
        (  # a secret without its key id
            {"store_backend": "s3", "s3_bucket": "ok-bucket"},
            "set both S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY",
        ),
        ({"s3_endpoint_url": "minio:9000"}, "http:// or https:// URL"),
        ({"s3_endpoint_url": "http://user:pw@minio:9000"}, "without credentials"),
        ({"s3_prefix": "a/../b"}, "s3_prefix"),
        ({"store_backend": "gcs"}, "store_backend"),
    ],
)
def test_bad_settings_are_refused_clearly(values: dict[str, str], complaint: str) -> None:
    secret = "s3cr3t-never-printed-0123456789"
    with pytest.raises(ValidationError) as caught:
        ContentStoreSettings.model_validate({"s3_secret_access_key": secret, **values})
    assert complaint in str(caught.value)
    assert secret not in str(caught.value)


def test_settings_normalise_prefix_and_empty_values() -> None:
    """Values as the environment gives them (compose passes unset variables as empty strings)."""
    settings = ContentStoreSettings.model_validate(
        {
            "store_backend": "s3",
            "s3_bucket": "loravet",
            "s3_prefix": " instance-1/blobs ",
            "s3_endpoint_url": "",
            "s3_access_key_id": "",
            "s3_secret_access_key": "",
        }
    )
    assert settings.s3_prefix == "instance-1/blobs/"
    assert settings.s3_endpoint_url is None and settings.s3_access_key_id is None
    assert settings.s3_secret_access_key is None
