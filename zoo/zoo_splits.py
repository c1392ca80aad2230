"""Deterministic, leakage-free splits of a zoo, and the rank-generalisation split.

LoRAs trained on the same topic/class subset share most of their training data, so a split that
put one in train and another in test would leak (above all for the membership task). Splits are
therefore by *group* (the membership vector).

Why not hash each group to a split: group sizes are uneven (in digits one subset, "all ten
classes", holds 12.5% of the zoo), so a per-group coin gave 84/7/9 instead of 80/10/10. Instead the
groups are put in a fixed pseudo-random order (sha256 of recipe and group, the same on every
machine and independent of file order) and laid end to end; a group goes to the split its midpoint
falls in, against cut points at 80% and 90% of the LoRAs. Each split then misses its share by at
most half a group at each cut. A group too big to fit a held-out split (more than half of one) is
put in train first and the cut points are moved so that the fractions still hold. The price: a
LoRA's split can change as a zoo grows, so splits are recomputed (``loravet zoo index``) and
models trained on a zoo's final split.

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


def group_order(recipe: str, group: str) -> bytes:
    """The sort key that puts a zoo's groups in their fixed pseudo-random order."""
    return hashlib.sha256(f"loravet-zoo-split/{recipe}/{group}".encode()).digest()


def assign_groups(sizes: dict[str, int], recipe: str) -> dict[str, str]:
    """``train`` / ``val`` / ``test`` per group, each split near its fraction of the LoRAs."""
    total = sum(sizes.values())
    held_out = min(FRACTIONS["val"], FRACTIONS["test"]) * total
    big = {g for g, n in sizes.items() if n > held_out / 2}
    if sum(sizes[g] for g in big) > FRACTIONS["train"] * total:
        big = set()  # a tiny zoo, where every group is "big": the plain cut keeps val and test
    split_of = dict.fromkeys(big, "train")
    rest = sorted((g for g in sizes if g not in big), key=lambda g: group_order(recipe, g))
    rest_total = total - sum(sizes[g] for g in big)
    # cut points within the remaining LoRAs, so that train (big groups included) keeps its share
    train_cut = max(0.0, FRACTIONS["train"] * total - (total - rest_total))
    val_cut = train_cut + FRACTIONS["val"] * total
    at = 0
    for g in rest:
        mid = at + sizes[g] / 2
        split_of[g] = "train" if mid < train_cut else "val" if mid < val_cut else "test"
        at += sizes[g]
    return split_of


def group_key(row: dict[str, Any], membership_key: str) -> str:
    """The leakage group of a manifest row: its membership bits, e.g. ``"0110001000"``."""
    return "".join(str(int(b)) for b in row["labels"][membership_key])


def make_splits(rows: list[dict[str, Any]], recipe: str, membership_key: str) -> dict[str, Any]:
    """The ``splits.json`` document for manifest rows (sorted by index)."""
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    split_by_id = {}
    groups = Counter(group_key(r, membership_key) for r in rows)
    split_of = assign_groups(dict(groups), recipe)
    for row in rows:
        split = split_of[group_key(row, membership_key)]
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
    return {
        "method": (
            f"grouped by the {membership_key} membership vector; groups ordered by "
            "sha256('loravet-zoo-split/<recipe>/<group>') and laid end to end, each assigned by "
            "its midpoint against cut points at 80% and 90% of the LoRAs (groups larger than half "
            "a held-out split go to train first)"
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
