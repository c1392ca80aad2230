"""Predictor sets in the content store: how workers on other machines get the predictors.

Why content-addressed: a deployment names the predictors its workers load by one sha256 (the
digest of the set's manifest), so every worker of the deployment runs exactly the same bytes, a
new set is a new name (no worker half-updated), and a report can record which set produced it.

Layout in the store: each file of each predictor directory is a ``predictor-files`` blob named by
its sha256; the manifest (``predictor-sets`` blob, canonical JSON) lists, per predictor, its file
names and digests. A worker fetches the set once into a local cache directory, checking every
digest, and loads it from there as it would a mounted directory.

    loravet predictors publish predictors/        # prints the set's digest
    LORAVET_WORKER_PREDICTOR_SET=<digest> loravet worker

Torch-free: the publishing CLI and the worker's fetch need only the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from core.content_store import ContentStore
from core.contracts import is_sha256_hex

FORMAT = "loravet.predictor-set/1"
CONFIG_FILE = "config.json"
"""A predictor directory is one that holds this file (``loravet train`` writes it)."""

MAX_FILES_PER_PREDICTOR = 16
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""Predictor and file names in a manifest become local paths: one plain path component each."""


class PredictorSetError(ValueError):
    """The set cannot be used: absent from the store, not a manifest, or a file's bytes do not
    match their digest. The message says which and what to do."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_bytes(predictors: dict[str, dict[str, str]]) -> bytes:
    """The canonical manifest: the same predictors give the same bytes, hence the same name."""
    doc = {
        "format": FORMAT,
        "predictors": {k: dict(sorted(v.items())) for k, v in sorted(predictors.items())},
    }
    return (json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n").encode()


def publish_predictor_set(
    store: ContentStore, directory: Path
) -> tuple[str, dict[str, dict[str, str]]]:
    """Upload every predictor under ``directory`` (each subdirectory with a ``config.json``, or
    ``directory`` itself when it is one); returns the set's digest and its manifest entries.

    Idempotent: files and manifests are named by their sha256, so publishing the same predictors
    again uploads nothing new and returns the same digest.

    Raises:
        PredictorSetError: no predictor found, or a name that cannot travel safely.
    """
    directory = Path(directory)
    folders = (
        [directory]
        if (directory / CONFIG_FILE).is_file()
        else sorted(p for p in directory.iterdir() if (p / CONFIG_FILE).is_file())
        if directory.is_dir()
        else []
    )
    if not folders:
        raise PredictorSetError(
            f"{directory} holds no predictor: expected directories with a {CONFIG_FILE} "
            "(as `loravet train`, `ensemble` or `calibrate` write them)"
        )
    entries: dict[str, dict[str, str]] = {}
    for folder in folders:
        files = sorted(p for p in folder.iterdir() if p.is_file())
        _check_names(folder.name, [p.name for p in files])
        entries[folder.name] = {}
        for path in files:
            data = path.read_bytes()
            digest = _sha256(data)
            if not store.exists("predictor-files", digest):
                store.put_bytes("predictor-files", digest, data)
            entries[folder.name][path.name] = digest
    manifest = manifest_bytes(entries)
    digest = _sha256(manifest)
    store.put_bytes("predictor-sets", digest, manifest)
    return digest, entries


def fetch_predictor_set(store: ContentStore, digest: str, cache_root: Path) -> Path:
    """The set's directory under ``cache_root/<digest>``, fetched and checked on first use.

    The directory appears whole (built beside it, then renamed), so a worker killed while fetching
    leaves nothing a later start would take for a complete set.

    Raises:
        PredictorSetError: the set is not in the store, or its bytes do not match their digests.
        StoreUnavailableError: the store cannot be read now (retry later).
    """
    final = Path(cache_root) / digest
    if final.is_dir():
        return final
    try:
        manifest = store.get_bytes("predictor-sets", digest)
    except FileNotFoundError:
        raise PredictorSetError(
            f"predictor set {digest} is not in the content store; publish it with "
            "`loravet predictors publish DIR` against the same store (backend, bucket, prefix)"
        ) from None
    if _sha256(manifest) != digest:
        raise PredictorSetError(
            f"predictor set {digest}: the stored manifest does not match its digest"
        )
    entries = _read_manifest(manifest, digest)
    building = Path(cache_root) / f".{digest}.{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    try:
        for name, files in entries.items():
            (building / name).mkdir(parents=True)
            for file_name, file_digest in files.items():
                try:
                    data = store.get_bytes("predictor-files", file_digest)
                except FileNotFoundError:
                    raise PredictorSetError(
                        f"predictor set {digest}: file {name}/{file_name} ({file_digest}) is missing "
                        "from the store; publish the set again"
                    ) from None
                if _sha256(data) != file_digest:
                    raise PredictorSetError(
                        f"predictor set {digest}: {name}/{file_name} does not match its sha256 "
                        "(the stored bytes were changed); publish the set again"
                    )
                (building / name / file_name).write_bytes(data)
        try:
            os.rename(building, final)
        except OSError:
            if not final.is_dir():  # another process finished it first: keep theirs
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return final


def _check_names(predictor: str, files: list[str]) -> None:
    if not _SAFE_NAME.fullmatch(predictor) or predictor.startswith("."):
        raise PredictorSetError(
            f"predictor directory name {predictor!r} cannot be published: use letters, digits, '.', '_' and '-'"
        )
    if len(files) > MAX_FILES_PER_PREDICTOR:
        raise PredictorSetError(
            f"predictor {predictor} has {len(files)} files; at most {MAX_FILES_PER_PREDICTOR} are published"
        )
    for name in files:
        if not _SAFE_NAME.fullmatch(name) or name.startswith(".") or name in (".", ".."):
            raise PredictorSetError(
                f"file name {predictor}/{name!r} cannot be published: use letters, digits, '.', '_' and '-'"
            )


def _read_manifest(data: bytes, digest: str) -> dict[str, dict[str, str]]:
    try:
        doc: Any = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PredictorSetError(f"predictor set {digest} is not a JSON manifest") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise PredictorSetError(f"predictor set {digest} is not a {FORMAT} manifest")
    predictors = doc.get("predictors")
    if not isinstance(predictors, dict) or not predictors:
        raise PredictorSetError(f"predictor set {digest} lists no predictors")

    out: dict[str, dict[str, str]] = {}
    for name, files in predictors.items():
        if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and is_sha256_hex(v) for k, v in files.items()
        ):
            raise PredictorSetError(f"predictor set {digest}: entry {name!r} is malformed")
        _check_names(str(name), list(files))
        out[str(name)] = dict(files)
    return out
