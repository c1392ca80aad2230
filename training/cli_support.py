"""Argument parsing conventions shared by the training and evaluation commands.

User mistakes end as one ``error:`` line and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys


class CliError(Exception):
    """A user-facing error: printed as ``error: <message>``, exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2
