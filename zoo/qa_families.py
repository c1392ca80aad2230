"""Short-answer question families generated offline from facts that ship with Python.

Why: a ``causal-lm`` finetune needs task data that varies between finetunes (which families, how
many items) and whose held-out accuracy can be measured exactly, offline and deterministically.
Every family is a pure function of the Python standard library (arithmetic, the calendar, ASCII,
``http.HTTPStatus``, ``mimetypes``' built-in table, which stdlib module defines a function, Roman
numerals...), so the data needs no download and is identical wherever the same Python runs (its
version is recorded with the zoo). Families are chosen to be distinguishable (a finetune's
membership vector says which were in its data) and to differ in how learnable they are, so that
quality has a real spread.

Each family is shuffled with a fixed seed; its first ``eval_per_family`` items are the fixed
held-out part, the rest is the training pool.

    from zoo.qa_families import load_families
    fams = load_families(eval_per_family=30)
    fams["add"].pool[0]   # QAItem(question='What is 23 + 4?', answer='27')
"""

from __future__ import annotations

import builtins
import calendar
import functools
import hashlib
import http
import importlib
import inspect
import json
import keyword
import mimetypes
import platform
import string
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MAX_ITEMS = 400
"""At most this many items per family (drawn with the family's fixed seed)."""


@dataclass(frozen=True)
class QAItem:
    question: str
    answer: str


@dataclass(frozen=True)
class QAFamily:
    name: str
    held_out: tuple[QAItem, ...]
    pool: tuple[QAItem, ...]


def _add() -> list[QAItem]:
    return [QAItem(f"What is {a} + {b}?", str(a + b)) for a in range(1, 60) for b in range(1, 60)]


def _subtract() -> list[QAItem]:
    return [QAItem(f"What is {a} - {b}?", str(a - b)) for a in range(2, 80) for b in range(1, a)]


def _multiply() -> list[QAItem]:
    return [
        QAItem(f"What is {a} times {b}?", str(a * b)) for a in range(2, 21) for b in range(2, 13)
    ]


def _larger() -> list[QAItem]:
    return [
        QAItem(f"Which number is larger, {a} or {b}?", str(max(a, b)))
        for a in range(10, 100, 3)
        for b in range(11, 100, 4)
        if a != b
    ]


def _roman(n: int) -> str:
    out = ""
    for value, sym in ((100, "C"), (90, "XC"), (50, "L"), (40, "XL"), (10, "X"), (9, "IX"),
                       (5, "V"), (4, "IV"), (1, "I")):  # fmt: skip
        while n >= value:
            out, n = out + sym, n - value
    return out


def _roman_numerals() -> list[QAItem]:
    return [QAItem(f"How is {n} written in Roman numerals?", _roman(n)) for n in range(1, 200)]


def _months() -> list[QAItem]:
    names = list(calendar.month_name)[1:]
    return [
        QAItem(f"Which month comes {k} months after {m}?", names[(i + k) % 12])
        for i, m in enumerate(names)
        for k in range(1, 12)
    ] + [QAItem(f"Which month is number {i + 1} of the year?", m) for i, m in enumerate(names)]


def _ascii() -> list[QAItem]:
    chars = list(string.ascii_letters + string.digits)
    return [
        QAItem(f"What is the ASCII code of the character '{c}'?", str(ord(c))) for c in chars
    ] + [QAItem(f"Which character has ASCII code {ord(c)}?", c) for c in chars]


def _http_status() -> list[QAItem]:
    statuses = sorted(http.HTTPStatus, key=int)
    return [
        QAItem(f"What is the HTTP status code for '{s.phrase}'?", str(int(s))) for s in statuses
    ] + [QAItem(f"What is the reason phrase of HTTP status {int(s)}?", s.phrase) for s in statuses]


def _mime_types() -> list[QAItem]:
    table = mimetypes.MimeTypes().types_map[True]  # Python's built-in table only, no system files
    return [
        QAItem(f"What is the MIME type of a '{ext}' file?", table[ext]) for ext in sorted(table)
    ]


_DEFINING_MODULES = ("math", "os", "json", "random", "shutil", "time", "re", "heapq", "bisect",
                     "textwrap", "glob", "copy", "base64", "itertools", "functools", "operator",
                     "statistics", "string", "calendar", "hashlib", "zlib", "struct", "socket",
                     "datetime", "collections", "fnmatch", "difflib", "pprint", "tempfile")  # fmt: skip


def _stdlib_module() -> list[QAItem]:
    owners: dict[str, set[str]] = {}
    for name in _DEFINING_MODULES:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", None) or dir(module):
            if attr.startswith("_") or not attr.isidentifier() or hasattr(builtins, attr):
                continue
            obj = getattr(module, attr, None)
            if inspect.isfunction(obj) or inspect.isbuiltin(obj) or inspect.isclass(obj):
                owners.setdefault(attr, set()).add(name)
    by_module: dict[str, list[str]] = {}
    for attr, mods in sorted(owners.items()):
        if len(mods) == 1:
            by_module.setdefault(next(iter(mods)), []).append(attr)
    # at most 20 names per module, so that answering "os" to everything is not a strategy
    return [
        QAItem(f"Which Python standard library module defines '{attr}'?", module)
        for module, attrs in sorted(by_module.items())
        for attr in attrs[:: max(1, len(attrs) // 20)][:20]
    ]


def _words() -> list[str]:
    names = {n for n in dir(builtins) if n.isalpha() and n.islower() and len(n) >= 3}
    names |= {k for k in keyword.kwlist if k.isalpha() and k.islower() and len(k) >= 3}
    names |= {m.lower() for m in calendar.month_name[1:]} | {d.lower() for d in calendar.day_name}
    names |= {m for m in _DEFINING_MODULES if m.isalpha()}
    return sorted(names)


def _uppercase() -> list[QAItem]:
    return [QAItem(f"Write the word '{w}' in capital letters.", w.upper()) for w in _words()]


def _alphabetical() -> list[QAItem]:
    words = _words()
    rng = np.random.default_rng(7)
    pairs = {
        tuple(sorted(rng.choice(len(words), size=2, replace=False).tolist())) for _ in range(900)
    }
    items = []
    for i, j in sorted(pairs):
        a, b = (words[i], words[j]) if (i + j) % 2 else (words[j], words[i])
        items.append(
            QAItem(f"Which word comes first in alphabetical order, '{a}' or '{b}'?", min(a, b))
        )
    return items


FAMILY_BUILDERS: dict[str, Callable[[], list[QAItem]]] = {
    "add": _add,
    "subtract": _subtract,
    "multiply": _multiply,
    "larger": _larger,
    "roman": _roman_numerals,
    "months": _months,
    "ascii": _ascii,
    "http_status": _http_status,
    "mime_type": _mime_types,
    "stdlib_module": _stdlib_module,
    "uppercase": _uppercase,
    "alphabetical": _alphabetical,
}
"""Family name -> item generator (all items, in a fixed order)."""

FAMILIES: tuple[str, ...] = tuple(FAMILY_BUILDERS)


@functools.cache
def load_families(eval_per_family: int) -> dict[str, QAFamily]:
    """Every family, shuffled with its own fixed seed, split into held-out and pool parts."""
    out = {}
    for k, (name, build) in enumerate(FAMILY_BUILDERS.items()):
        items = build()
        rng = np.random.default_rng([20261201, k])
        order = rng.permutation(len(items))[:MAX_ITEMS]
        chosen = [items[int(i)] for i in order]
        out[name] = QAFamily(name, tuple(chosen[:eval_per_family]), tuple(chosen[eval_per_family:]))
    return out


def families_digest(families: dict[str, QAFamily]) -> str:
    """sha256 over every family's items, recorded with each LoRA so data drift is detectable."""
    doc = {
        name: [[i.question, i.answer] for i in fam.held_out + fam.pool]
        for name, fam in families.items()
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def python_version() -> str:
    return platform.python_version()
