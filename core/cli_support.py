"""Argument parsing shared by every ``loravet`` command (and ``examples/make_examples.py``).

User mistakes end as one ``error:`` line and exit code 2, never a traceback or a usage dump.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from pydantic import ValidationError


class CliError(Exception):
    """A user-facing error: printed as ``error: <message>``, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one ``error:`` line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def settings_error(exc: ValidationError, prefix: str) -> str:
    """One line naming each bad setting (``<prefix><FIELD>``) and its problem, never the value
    (it may be a key or a password)."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{prefix}{loc.upper()}: {msg}" if loc else msg)
    return "; ".join(parts)
