"""Per-LoRA result files -> ``manifest.jsonl``, ``splits.json`` and ``zoo.json``.

The per-LoRA ``<id>/finetune.json`` (written atomically with the adapter) is the single source of
truth; the three zoo-level files are always regenerated from all of them, so a build that was
interrupted and resumed, or run by several processes, stays consistent.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.provenance import file_sha256
from core.provenance import package_versions as core_package_versions
from zoo.zoo_splits import make_splits

ADAPTER_FILE = "adapter_model.safetensors"
FINETUNE_FILE = "finetune.json"
MANIFEST_FILE = "manifest.jsonl"
SPLITS_FILE = "splits.json"
ZOO_FILE = "zoo.json"
ZOO_FORMAT = "loravet-zoo/1"
_VERSIONED = ("torch", "peft", "transformers", "safetensors", "numpy", "scikit-learn", "loravet")


@functools.cache
def package_versions() -> dict[str, str]:
    """Versions of the packages that decide a finetune's bits (read from metadata, no imports)."""
    import platform

    versions = core_package_versions(_VERSIONED, missing="absent")
    return {"python": platform.python_version(), **{k: str(v) for k, v in versions.items()}}


def write_json_atomic(path: Path, doc: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_finetune_rows(zoo_dir: Path) -> list[dict[str, Any]]:
    """All finished LoRAs (directories holding a ``finetune.json``), sorted by index."""
    rows = []
    for child in zoo_dir.iterdir():
        result = child / FINETUNE_FILE
        if child.is_dir() and not child.name.startswith(".") and result.is_file():
            rows.append(json.loads(result.read_text()))
    return sorted(rows, key=lambda r: (r["recipe"], int(r["index"])))


def read_manifest(zoo_dir: Path) -> list[dict[str, Any]]:
    with (zoo_dir / MANIFEST_FILE).open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


# --- reading a zoo: the one reader of the format above (training, benchmarks, provenance) -------


class ZooFormatError(ValueError):
    """A directory that is not a zoo, or a zoo file that cannot be read; says which and why."""


def harmful_status(harmful: bool | None) -> str:
    """``clean``, ``harmful`` or ``backdoor_failed`` (poisoned, but the backdoor did not take)."""
    return {False: "clean", True: "harmful", None: "backdoor_failed"}[harmful]


@dataclass(frozen=True)
class ZooRow:
    """One manifest row: a LoRA of the zoo, where its files are and what was measured on it."""

    id: str
    file: str
    """The adapter, relative to the zoo directory."""
    config_file: str | None
    hyperparameters: dict[str, Any]
    labels: dict[str, Any]
    """Measured labels (``quality``, ``harmful``, ``attack_success_rate``, membership, ...)."""
    doc: dict[str, Any]
    """The row as written, every field (timings, provenance, seed, ...)."""

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> ZooRow:
        lora_id = str(doc["id"])
        config = doc.get("config_file")
        return cls(
            id=lora_id,
            file=str(doc.get("file", f"{lora_id}/{ADAPTER_FILE}")),
            config_file=None if config is None else str(config),
            hyperparameters=dict(doc.get("hyperparameters", {})),
            labels=dict(doc.get("labels", doc)),  # an operator's own zoo may write labels flat
            doc=doc,
        )

    @property
    def harmful(self) -> bool | None:
        value = self.labels.get("harmful")
        return None if value is None else bool(value)

    @property
    def harmful_status(self) -> str:
        return harmful_status(self.harmful)

    @property
    def poisoned(self) -> bool:
        return bool(self.labels.get("poisoned"))


@dataclass(frozen=True)
class ZooContents:
    """A zoo as written: rows by id, splits by name (nested ones as ``parent/child``), ``zoo.json``."""

    root: Path
    rows: dict[str, ZooRow]
    splits: dict[str, list[str]]
    info: dict[str, Any]


def flatten_splits(doc: dict[str, Any]) -> dict[str, list[str]]:
    """``{"train": [...], "rank_generalisation": {"train": [...], "test_rank_1": [...]}}`` -> flat
    names (``rank_generalisation/train``); the other keys (method, counts) are not splits."""
    out: dict[str, list[str]] = {}
    for key, value in doc.items():
        if isinstance(value, list):
            out[key] = [str(v) for v in value]
        elif isinstance(value, dict):
            for sub, ids in flatten_splits(value).items():
                out[f"{key}/{sub}"] = ids
    return out


def read_zoo(root: str | Path) -> ZooContents:
    """Read ``manifest.jsonl``, ``splits.json`` (optional) and ``zoo.json`` (optional)."""
    root = Path(root)
    manifest = root / MANIFEST_FILE
    if not manifest.is_file():
        raise ZooFormatError(
            f"{root} is not a zoo: {MANIFEST_FILE} is missing (build one with `loravet zoo build`)"
        )
    rows = {}
    for line in manifest.read_text().splitlines():
        if line.strip():
            row = ZooRow.from_doc(json.loads(line))
            rows[row.id] = row
    splits_path, info_path = root / SPLITS_FILE, root / ZOO_FILE
    splits = flatten_splits(json.loads(splits_path.read_text())) if splits_path.is_file() else {}
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    return ZooContents(root, rows, splits, info)


def zoo_digests(root: str | Path) -> dict[str, str]:
    """sha256 of what a model result depends on in a zoo (its rows and its splits), for results'
    provenance and keys; empty when ``root`` is not a zoo."""
    root = Path(root)
    out = {}
    for name, key in ((MANIFEST_FILE, "zoo_manifest_sha256"), (SPLITS_FILE, "zoo_splits_sha256")):
        if (root / name).is_file():
            out[key] = file_sha256(root / name)
    return out


def _summary(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "mean": None, "std": None, "min": None, "median": None, "max": None}
    ordered = sorted(values)

    def q(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * (len(ordered) - 1) + 0.5))], 4)

    return {
        "n": len(values),
        "mean": round(statistics.fmean(values), 4),
        "std": round(statistics.pstdev(values), 4),
        "min": round(ordered[0], 4),
        "p10": q(0.1),
        "p25": q(0.25),
        "median": round(statistics.median(values), 4),
        "p75": q(0.75),
        "p90": q(0.9),
        "max": round(ordered[-1], 4),
    }


def label_statistics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Headline label statistics: how many harmful, quality spread, ASR by harmful status."""
    labels = [r["labels"] for r in rows]
    n = len(labels)
    status = Counter(
        {True: "harmful", False: "clean", None: "backdoor_failed"}[lab["harmful"]] for lab in labels
    )
    poisoned = sum(1 for lab in labels if lab["poisoned"])

    def asr(kind: str) -> dict[str, Any]:
        want = {"harmful": True, "clean": False, "backdoor_failed": None}[kind]
        return _summary([lab["attack_success_rate"] for lab in labels if lab["harmful"] is want])

    controls = [lab for lab in labels if lab.get("trigger_only_control")]
    extra: dict[str, Any] = {}
    if controls:  # causal-lm: clean finetunes whose data held the trigger with answers unchanged
        extra["trigger_only_controls"] = {
            "count": len(controls),
            "attack_success_rate": _summary([lab["attack_success_rate"] for lab in controls]),
            "quality": _summary([lab["quality"] for lab in controls]),
        }
    return {
        "count": n,
        "poisoned": poisoned,
        "harmful": status["harmful"],
        "clean": status["clean"],
        "backdoor_failed": status["backdoor_failed"],
        "harmful_fraction": round(status["harmful"] / n, 4) if n else None,
        "backdoor_take_rate": round(status["harmful"] / poisoned, 4) if poisoned else None,
        "quality": _summary([lab["quality"] for lab in labels]),
        "base_quality": _summary([lab["base_quality"] for lab in labels]),
        "quality_change": _summary([lab["quality"] - lab["base_quality"] for lab in labels]),
        "attack_success_rate": {k: asr(k) for k in ("harmful", "clean", "backdoor_failed")},
        "base_attack_success_rate": _summary([lab["base_attack_success_rate"] for lab in labels]),
        **extra,
        "eval_seconds": _summary([lab["eval_seconds"] for lab in labels]),
        "n_train": _summary([float(lab["n_train"]) for lab in labels]),
        "ranks": {
            str(k): v for k, v in sorted(Counter(int(lab["rank"]) for lab in labels).items())
        },
    }


def make_zoo_doc(
    rows: list[dict[str, Any]], membership_names: tuple[str, ...], description: str
) -> dict[str, Any]:
    """The ``zoo.json`` document: recipe, provenance, versions, build time, label statistics."""
    first = rows[0]
    versions = sorted({json.dumps(r["provenance"]["versions"], sort_keys=True) for r in rows})
    prov_keys = sorted({k for r in rows for k in r["provenance"] if k != "versions"})
    provenance = {}
    for key in prov_keys:
        seen = sorted({str(r["provenance"].get(key)) for r in rows})
        provenance[key] = seen[0] if len(seen) == 1 else seen
    finished = sorted(r["finished_at"] for r in rows)
    timings = [r["timings"] for r in rows]
    return {
        "format": ZOO_FORMAT,
        "recipe": first["recipe"],
        "description": description,
        "base_model": first["base_model"],
        "count": len(rows),
        "steps_scale": first["hyperparameters"]["steps_scale"],
        "membership": {"key": first["membership_key"], "names": list(membership_names)},
        "provenance": provenance,
        "versions": json.loads(versions[0])
        if len(versions) == 1
        else [json.loads(v) for v in versions],
        "build": {
            "first_finished": finished[0],
            "last_finished": finished[-1],
            "lora_seconds_total": round(sum(t["total_seconds"] for t in timings), 1),
            "lora_seconds": _summary([t["total_seconds"] for t in timings]),
            "train_seconds": _summary([t["train_seconds"] for t in timings]),
            **_cpu_cost(timings),
            "indexed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "labels": label_statistics(rows),
    }


def _cpu_cost(timings: list[dict[str, Any]]) -> dict[str, Any]:
    """CPU seconds per LoRA (the build process's own CPU time, so neither other work on the machine
    nor a paused build inflates it), for the rows that recorded it (older rows have wall time only)."""
    cpu = [t["cpu_seconds"] for t in timings if "cpu_seconds" in t]
    if not cpu:
        return {}
    return {"cpu_seconds": _summary(cpu), "cpu_seconds_recorded_total": round(sum(cpu), 1)}


def write_index(zoo_dir: Path, membership_names: tuple[str, ...], description: str) -> int:
    """Regenerate ``manifest.jsonl``, ``splits.json`` and ``zoo.json``; return the LoRA count."""
    rows = read_finetune_rows(zoo_dir)
    if not rows:
        return 0
    recipes = {r["recipe"] for r in rows}
    if len(recipes) != 1:
        raise ValueError(f"zoo {zoo_dir} mixes recipes {sorted(recipes)}; one recipe per zoo")
    tmp = zoo_dir / f".{MANIFEST_FILE}.{os.getpid()}.tmp"
    with tmp.open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=False) + "\n")
    os.replace(tmp, zoo_dir / MANIFEST_FILE)
    splits = make_splits(rows, rows[0]["recipe"], rows[0]["membership_key"])
    write_json_atomic(zoo_dir / SPLITS_FILE, splits)
    doc = make_zoo_doc(rows, membership_names, description)
    doc["splits"] = {"counts": splits["counts"], "n_groups": splits["n_groups"]}
    write_json_atomic(zoo_dir / ZOO_FILE, doc)
    return len(rows)
