"""Predictor sets: published once under one digest, fetched whole and checked byte for byte on
another machine, refused with a clear reason when absent or changed; the CLI says the same."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path

import pytest

from core.content_store import LocalContentStore
from core.predictor_sets import PredictorSetError, fetch_predictor_set, publish_predictor_set
from harness.embedded_s3 import EmbeddedS3
from loravet import SHIPPED_PREDICTORS
from loravet.cli import main as loravet_main


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_publish_then_fetch_elsewhere_gives_the_same_files(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path / "store")
    digest, entries = publish_predictor_set(store, SHIPPED_PREDICTORS)
    assert sorted(entries) == sorted(p.name for p in SHIPPED_PREDICTORS.iterdir() if p.is_dir())
    # publishing again names the same set and stores nothing new
    files_before = sorted((tmp_path / "store").rglob("*"))
    assert publish_predictor_set(store, SHIPPED_PREDICTORS)[0] == digest
    assert sorted((tmp_path / "store").rglob("*")) == files_before

    fetched = fetch_predictor_set(store, digest, tmp_path / "other-host" / "cache")
    assert fetched.name == digest
    assert _tree(fetched) == _tree(SHIPPED_PREDICTORS)
    assert fetch_predictor_set(store, digest, tmp_path / "other-host" / "cache") == fetched
    assert [p.name for p in fetched.parent.iterdir()] == [digest]  # no build leftovers


def test_a_changed_set_is_a_new_name(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path / "store")
    one = tmp_path / "preds"
    shutil.copytree(SHIPPED_PREDICTORS / "digits-harmful-gl_net", one / "digits-harmful-gl_net")
    first, _ = publish_predictor_set(store, one)
    meta = one / "digits-harmful-gl_net" / "meta.json"
    meta.write_text(meta.read_text().replace("{", '{"note": "retrained",', 1))
    assert publish_predictor_set(store, one)[0] != first
    # a single predictor directory publishes as a set of one
    single, entries = publish_predictor_set(store, one / "digits-harmful-gl_net")
    assert list(entries) == ["digits-harmful-gl_net"] and single != first


def test_absent_and_tampered_sets_are_refused_with_the_reason(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path / "store")
    with pytest.raises(PredictorSetError, match=r"not in the content store.*predictors publish"):
        fetch_predictor_set(store, "ab" * 32, tmp_path / "cache")
    digest, entries = publish_predictor_set(store, SHIPPED_PREDICTORS / "digits-quality-gl_net")
    weights = entries["digits-quality-gl_net"]["model.safetensors"]
    path = store.path_for("predictor-files", weights)
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(PredictorSetError, match="does not match its sha256"):
        fetch_predictor_set(store, digest, tmp_path / "cache")
    assert not (tmp_path / "cache" / digest).exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # nothing half-fetched left


def test_unsafe_names_are_not_published(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path / "store")
    bad = tmp_path / "preds" / "has space"
    bad.mkdir(parents=True)
    (bad / "config.json").write_text("{}")
    with pytest.raises(PredictorSetError, match="cannot be published"):
        publish_predictor_set(store, tmp_path / "preds")
    with pytest.raises(PredictorSetError, match="holds no predictor"):
        publish_predictor_set(store, tmp_path / "nothing-here")


def test_a_forged_manifest_with_a_path_is_refused(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path / "store")
    file_digest = hashlib.sha256(b"x").hexdigest()
    store.put_bytes("predictor-files", file_digest, b"x")
    doc = {"format": "loravet.predictor-set/1", "predictors": {"p": {"../../escape": file_digest}}}
    forged = json.dumps(doc).encode()
    digest = hashlib.sha256(forged).hexdigest()
    store.put_bytes("predictor-sets", digest, forged)
    with pytest.raises(PredictorSetError, match="cannot be published"):
        fetch_predictor_set(store, digest, tmp_path / "cache")
    assert not (tmp_path / "escape").exists()


@pytest.mark.redis  # starts a server process, like the other S3 tests
def test_publish_and_fetch_through_s3(tmp_path: Path) -> None:
    from core.content_store import ContentStoreSettings, open_content_store

    with EmbeddedS3(tmp_path / "s3") as server:
        settings = ContentStoreSettings(
            storage_dir=tmp_path / "scratch", **server.settings(prefix=f"p-{uuid.uuid4().hex[:8]}/")
        )
        store = open_content_store(settings)
        digest, _ = publish_predictor_set(store, SHIPPED_PREDICTORS)
        fetched = fetch_predictor_set(store, digest, tmp_path / "worker-host" / "cache")
        assert _tree(fetched) == _tree(SHIPPED_PREDICTORS)


def test_cli_publish_prints_the_digest_and_refuses_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_dir = tmp_path / "store"
    code = loravet_main(
        ["predictors", "publish", str(SHIPPED_PREDICTORS), "--storage", str(store_dir)]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    digest = out.split("as set ")[1].split()[0]
    assert f"LORAVET_WORKER_PREDICTOR_SET={digest}" in out
    assert LocalContentStore(store_dir).exists("predictor-sets", digest)

    code = loravet_main(
        ["predictors", "publish", str(tmp_path / "empty"), "--storage", str(store_dir)]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "holds no predictor" in err
    assert err.count("\n") == 1
