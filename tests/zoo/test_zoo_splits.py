"""Splits are grouped by membership (no subset in two splits), deterministic, and rank-aware."""

from __future__ import annotations

import random
from collections import Counter

import pytest

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
    largest = max(Counter(group_of.values()).values())
    for name, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs(doc["counts"][name] - share * 600) <= largest


def test_fractions_hold_with_one_huge_group() -> None:
    """Like digits' "all ten classes": one group holds 12.5% of the zoo; a per-group coin missed
    80/10/10 by several points, the laid-end-to-end cut must not."""
    rows = _rows(2000)
    for row in rows[:250]:
        row["labels"]["classes"] = [1] * 10
    doc = make_splits(rows, "digits", "classes")
    huge = {r["id"] for r in rows[:250]}
    assert huge <= set(doc["train"])
    other = max(Counter(tuple(r["labels"]["classes"]) for r in rows[250:]).values())  # ~25
    assert doc["counts"]["train"] == pytest.approx(1600, abs=other)
    assert doc["counts"]["val"] == pytest.approx(200, abs=other)
    assert doc["counts"]["test"] == pytest.approx(200, abs=other)


def test_order_of_rows_does_not_matter() -> None:
    rows = _rows(500)
    shuffled = list(rows)
    random.Random(1).shuffle(shuffled)
    a, b = make_splits(rows, "digits", "classes"), make_splits(shuffled, "digits", "classes")
    for name in ("train", "val", "test"):
        assert set(a[name]) == set(b[name])


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


def test_a_tiny_zoo_still_has_val_and_test() -> None:
    rows = _rows(10)
    for i, row in enumerate(rows):  # ten groups of one
        row["labels"]["classes"] = [int(b) for b in f"{i + 1:010b}"]
    doc = make_splits(rows, "digits", "classes")
    assert doc["counts"] == {"train": 8, "val": 1, "test": 1}
