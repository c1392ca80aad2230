"""Topic-labelled English sentences from the Python standard library's own docstrings.

Why this corpus: the machine is offline and sklearn bundles no text data, but every Python
install carries ~1 MB of well-written English about clearly separable subjects (files, networking,
GUIs, ...). The prototype's ``dates`` group is replaced by ``gui``: datetime/calendar are largely
C or terse in 3.11 and yield only ~120 prose sentences from source, below the 300 a group needs. Sentences are read with :mod:`ast` from the ``.py`` sources only, never by importing
a module, so the corpus does not depend on which optional C extensions (``_tkinter``, ``_ssl``...)
happen to be installed. Everything is deterministic: sorted file list, fixed filters, and a held-out
part chosen by a hash of the sentence text (not by position), so it is stable under reordering.

    from zoo.stdlib_sentences import load_topic_corpus
    corpus = load_topic_corpus()
    corpus.groups["gui"].pool[:3], corpus.groups["gui"].test[:3]
"""

from __future__ import annotations

import ast
import functools
import hashlib
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path

TOPIC_MODULES: dict[str, tuple[str, ...]] = {
    "text": ("string", "re", "sre_compile", "sre_parse", "sre_constants", "textwrap", "difflib",
             "stringprep", "codecs", "encodings", "locale", "gettext", "shlex", "tokenize"),
    "math": ("statistics", "fractions", "decimal", "_pydecimal", "random", "numbers", "colorsys"),
    "files": ("os", "pathlib", "shutil", "glob", "fnmatch", "tempfile", "filecmp", "fileinput",
              "stat", "genericpath", "posixpath", "ntpath", "_pyio", "io"),
    "net": ("socket", "ssl", "http", "urllib", "smtplib", "ftplib", "poplib", "imaplib", "nntplib",
            "socketserver", "xmlrpc", "ipaddress", "wsgiref", "telnetlib", "smtpd", "asynchat",
            "asyncore"),
    "conc": ("threading", "_threading_local", "multiprocessing", "concurrent", "asyncio", "queue",
             "sched", "subprocess", "selectors"),
    "formats": ("json", "csv", "configparser", "xml", "html", "plistlib", "tomllib", "netrc",
                "base64", "quopri", "uu", "pickle", "struct", "mimetypes", "xdrlib"),
    "gui": ("tkinter", "turtle"),
    "compress": ("zipfile", "tarfile", "gzip", "bz2", "lzma", "zipimport", "_compression", "zipapp"),
    "debug": ("pdb", "bdb", "traceback", "inspect", "dis", "logging", "unittest", "doctest",
              "cProfile", "profile", "pstats", "trace", "warnings", "tracemalloc", "timeit",
              "tabnanny", "cgitb"),
}  # fmt: skip
"""Topic group -> top-level stdlib modules or packages whose docstrings it is made of."""

TOPIC_DESCRIPTIONS: dict[str, str] = {
    "text": "text processing, strings, regular expressions and character encodings",
    "math": "mathematics, numbers, statistics, fractions, decimals and random numbers",
    "files": "files, directories, paths and the operating system file system",
    "net": "networking, sockets, internet protocols, HTTP, URLs and mail servers",
    "conc": "concurrency, threads, processes, queues and asynchronous tasks",
    "formats": "data formats and serialization such as JSON, CSV, XML, HTML and config files",
    "gui": "graphical user interfaces, windows, widgets, canvas drawing and turtle graphics",
    "compress": "compression and archives such as zip, tar, gzip, bz2 and lzma",
    "debug": "debugging, logging, tracebacks, profiling, inspection and unit testing",
}
"""Fixed description per topic; the classifier's anchors are base-model embeddings of these."""

TOPICS: tuple[str, ...] = tuple(TOPIC_MODULES)
"""Topic order used everywhere (membership vectors, class indices)."""

HELD_OUT_PERCENT = 30
"""Share of each group's sentences kept out of every finetune (chosen by sentence hash)."""

MIN_WORDS, MAX_WORDS = 5, 40
"""Sentence length filter in words: shorter is rarely topical, longer is usually a list or code."""

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_BAD_MARKERS = (">>>", "::", "http", "www.", "|", "==", "->", "${", "__")
_CODE_LINE = re.compile(r"^\s{4,}\S|^\s*[-*+] |^\s*[A-Za-z_][\w.]*\s*\(.*\)\s*(->.*)?$")


@dataclass(frozen=True)
class TopicGroup:
    """Sentences of one topic: ``pool`` (finetunes draw from it) and ``test`` (held out), hash-ordered."""

    name: str
    pool: tuple[str, ...]
    test: tuple[str, ...]


@dataclass(frozen=True)
class TopicCorpus:
    """All topic groups plus a digest that changes whenever any sentence or split changes."""

    groups: dict[str, TopicGroup]
    digest: str
    python_version: str


def _stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _module_files(stdlib: Path, top: str) -> list[Path]:
    single = stdlib / f"{top}.py"
    if single.is_file():
        return [single]
    package = stdlib / top
    if not package.is_dir():
        return []
    files = [p for p in package.rglob("*.py") if not {"test", "tests", "idle_test"} & set(p.parts)]
    return sorted(files, key=lambda p: p.relative_to(stdlib).as_posix())


def _docstrings(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                out.append(doc)
    return out


def _is_prose(sentence: str) -> bool:
    words = sentence.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS or not sentence.endswith("."):
        return False
    if any(marker in sentence for marker in _BAD_MARKERS):
        return False
    letters = sum(c.isalpha() or c.isspace() for c in sentence)
    if letters < 0.9 * len(sentence):
        return False
    return sentence[0].isupper()


def split_sentences(docstring: str) -> list[str]:
    """Prose sentences of one docstring: paragraphs without code or doctest lines, then filters."""
    sentences = []
    for paragraph in re.split(r"\n\s*\n", docstring):
        lines = paragraph.splitlines()
        if any(_CODE_LINE.match(line) or ">>>" in line for line in lines):
            continue
        text = " ".join(line.strip() for line in lines)
        sentences += [s.strip() for s in _SENTENCE_SPLIT.split(text) if _is_prose(s.strip())]
    return sentences


def _sentence_hash(sentence: str) -> str:
    return hashlib.sha256(sentence.encode("utf-8")).hexdigest()


@functools.cache
def load_topic_corpus() -> TopicCorpus:
    """Read, filter, de-duplicate and split the docstring sentences of every topic group.

    A sentence found under two topics is dropped from both (it cannot be labelled).
    """
    stdlib = _stdlib_dir()
    seen: dict[str, set[str]] = {}
    for topic, modules in TOPIC_MODULES.items():
        for top in modules:
            for path in _module_files(stdlib, top):
                for doc in _docstrings(path):
                    for sentence in split_sentences(doc):
                        seen.setdefault(sentence, set()).add(topic)
    by_topic: dict[str, list[str]] = {t: [] for t in TOPICS}
    for sentence, topics in seen.items():
        if len(topics) == 1:
            by_topic[next(iter(topics))].append(sentence)
    groups = {}
    digest = hashlib.sha256()
    for topic in TOPICS:
        ordered = sorted(by_topic[topic], key=_sentence_hash)
        test = tuple(s for s in ordered if int(_sentence_hash(s)[:8], 16) % 100 < HELD_OUT_PERCENT)
        held = set(test)
        pool = tuple(s for s in ordered if s not in held)
        groups[topic] = TopicGroup(topic, pool, test)
        for part, sentences in (("pool", pool), ("test", test)):
            digest.update(f"{topic}/{part}/{len(sentences)}\n".encode())
            for s in sentences:
                digest.update(s.encode("utf-8") + b"\n")
    version = ".".join(str(v) for v in __import__("sys").version_info[:3])
    return TopicCorpus(groups, digest.hexdigest(), version)
