"""The content store: keys are sha256 digests, names never escape the root, writes are atomic."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from core.content_store import LocalContentStore, StoreUnavailableError


def test_put_get_exists_and_layout(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path / "store")
    data = b"adapter bytes"
    key = hashlib.sha256(data).hexdigest()
    assert not store.exists("adapters", key)
    store.put_bytes("adapters", key, data)
    assert store.exists("adapters", key) and store.get_bytes("adapters", key) == data
    assert (
        store.path_for("adapters", key)
        == tmp_path / "store" / "adapters" / key[:2] / f"{key}.safetensors"
    )
    temp = store.temporary_file()
    temp.write_bytes(b"report")
    store.put_file("reports", key, temp)
    assert not temp.exists() and store.get_bytes("reports", key) == b"report"
    assert list((tmp_path / "store" / "tmp").iterdir()) == []
    with pytest.raises(FileNotFoundError):
        store.get_bytes("configs", key)


BAD_LOCATIONS = [
    ("adapters", "../../etc/passwd"),
    ("adapters", "A" * 64),
    ("adapters", "0" * 63),
    ("adapters", "/" + "0" * 63),
    ("adapters", "0" * 64 + "/x"),
    ("../adapters", "0" * 64),
    ("tmp", "0" * 64),
]
"""(kind, key) pairs every store refuses before touching a file or sending a request."""


@pytest.mark.parametrize(("kind", "key"), BAD_LOCATIONS)
def test_names_never_escape_the_root(tmp_path: Path, kind: str, key: str) -> None:
    store = LocalContentStore(tmp_path / "store")
    with pytest.raises(ValueError):
        store.path_for(kind, key)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.put_bytes(kind, key, b"x")  # type: ignore[arg-type]


def test_check_says_when_the_directory_is_gone(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path / "store")
    store.check()
    (tmp_path / "store" / "tmp").rmdir()
    with pytest.raises(StoreUnavailableError, match="missing or not writable"):
        store.check()
