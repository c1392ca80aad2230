"""Splits are grouped by membership (no subset in two splits), deterministic, and rank-aware."""

from __future__ import annotations

import random

from zoo.zoo_splits import make_splits


def _rows(n: int) -> list[dict]:
    rng = random.Random(0)
    ranks = [4] * 16 + [1, 2, 8, 16]
    rows = []
    for i in range(n):
        bits = [0] * 10
        for c in rng.sample(range(10), 3):
            bits[c] = 1
        rows.append({"id": f"digits-{i:05d}", "labels": {"classes": bits, "rank": ranks[i % 20]}})
    return rows


def test_grouped_and_deterministic() -> None:
    rows = _rows(600)
    doc = make_splits(rows, "digits", "classes")
    assert doc == make_splits(list(rows), "digits", "classes")
    group_of = {r["id"]: tuple(r["labels"]["classes"]) for r in rows}
    groups = {name: {group_of[i] for i in doc[name]} for name in ("train", "val", "test")}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    assert sum(doc["counts"].values()) == 600
    assert 0.65 < doc["counts"]["train"] / 600 < 0.95


def test_split_of_a_lora_never_changes_as_the_zoo_grows() -> None:
    small, large = (
        make_splits(_rows(100), "digits", "classes"),
        make_splits(_rows(400), "digits", "classes"),
    )
    for name in ("train", "val", "test"):
        assert set(small[name]) <= set(large[name])


def test_rank_generalisation_split() -> None:
    rows = _rows(400)
    doc = make_splits(rows, "digits", "classes")
    rg = doc["rank_generalisation"]
    rank_of = {r["id"]: r["labels"]["rank"] for r in rows}
    assert rg["train_rank"] == 4
    assert all(rank_of[i] == 4 for i in rg["train"] + rg["val"])
    assert set(rg["train"]) <= set(doc["train"])
    assert set(rg["test"]) == {"1", "2", "4", "8", "16"}
    for rank, ids in rg["test"].items():
        assert all(rank_of[i] == int(rank) for i in ids)
        assert not set(ids) & set(doc["train"])
