"""Deterministic, leakage-free splits of a zoo, and the rank-generalisation split.

LoRAs trained on the same topic/class subset share most of their training data, so a split that
put one in train and another in test would leak (above all for the membership task). Splits are
therefore by *group* (the membership vector), and a group's split is a hash of (recipe, group):
stable as the zoo grows, independent of file order, and the same on every machine.

Rank generalisation (the paper's "train on rank 4, test on other ranks"): train and val are the
rank-4 LoRAs of the train and val splits; test holds, per rank, the LoRAs outside the train split
(for rank 4 only the test split, since val is used for model selection). No test LoRA shares a
training subset with a training LoRA.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
TRAIN_RANK = 4


def split_of_group(recipe: str, group: str) -> str:
    """``train`` / ``val`` / ``test`` for a group key, by a uniform hash in [0, 1)."""
    u = (
        int.from_bytes(
            hashlib.sha256(f"loravet-zoo-split/{recipe}/{group}".encode()).digest()[:8], "big"
        )
        / 2**64
    )
    if u < FRACTIONS["train"]:
        return "train"
    return "val" if u < FRACTIONS["train"] + FRACTIONS["val"] else "test"


def group_key(row: dict[str, Any], membership_key: str) -> str:
    """The leakage group of a manifest row: its membership bits, e.g. ``"0110001000"``."""
    return "".join(str(int(b)) for b in row["labels"][membership_key])


def make_splits(rows: list[dict[str, Any]], recipe: str, membership_key: str) -> dict[str, Any]:
    """The ``splits.json`` document for manifest rows (sorted by index)."""
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    split_by_id = {}
    for row in rows:
        split = split_of_group(recipe, group_key(row, membership_key))
        parts[split].append(row["id"])
        split_by_id[row["id"]] = split
    ranks = sorted({int(row["labels"]["rank"]) for row in rows})
    rank_test: dict[str, list[str]] = {}
    for rank in ranks:
        allowed = ("test",) if rank == TRAIN_RANK else ("val", "test")
        rank_test[str(rank)] = [
            r["id"]
            for r in rows
            if int(r["labels"]["rank"]) == rank and split_by_id[r["id"]] in allowed
        ]
    at_rank = [r for r in rows if int(r["labels"]["rank"]) == TRAIN_RANK]
    groups = Counter(group_key(r, membership_key) for r in rows)
    return {
        "method": (
            f"grouped by the {membership_key} membership vector; a group's split is "
            "sha256('loravet-zoo-split/<recipe>/<group>') mapped to [0,1) against 0.8/0.9"
        ),
        "group_by": membership_key,
        "fractions": FRACTIONS,
        "counts": {k: len(v) for k, v in parts.items()},
        "n_groups": len(groups),
        **parts,
        "rank_generalisation": {
            "train_rank": TRAIN_RANK,
            "train": [r["id"] for r in at_rank if split_by_id[r["id"]] == "train"],
            "val": [r["id"] for r in at_rank if split_by_id[r["id"]] == "val"],
            "test": rank_test,
            "note": "test: per rank, LoRAs outside the train split (rank 4: test split only)",
        },
    }
