"""Validation shared by the models' frozen config dataclasses, so every model refuses bad
hyperparameters with the same words (a CLI user passing ``--hparams`` sees which value and why)."""

from __future__ import annotations

from typing import Any


def check_config(config: Any, positive: tuple[str, ...], dropout: str | None = "dropout") -> None:
    """Raise ``ValueError`` unless each ``positive`` field is >= 1 and ``dropout`` is in [0, 1)."""
    for name in positive:
        if getattr(config, name) < 1:
            raise ValueError(f"Invalid {name}: {getattr(config, name)!r} (must be >= 1)")
    if dropout is not None and not 0 <= getattr(config, dropout) < 1:
        raise ValueError(f"Invalid {dropout}: {getattr(config, dropout)!r} (must be in [0, 1))")
