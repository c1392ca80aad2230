"""Running a ``loravet`` command inside the test process.

A fresh ``python -m loravet`` spends about 5 s importing torch before it reaches the line under
test, so the tests of error messages run the command in-process (exit code and stderr as the user
would see them; argparse's exit included). Each CLI keeps at least one test through a real
subprocess, which also sees what imports print and how the interpreter exits.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from loravet.cli import main


def run_cli(argv: list[str], cwd: Path) -> tuple[int, str]:
    """``loravet <argv>`` run from ``cwd`` in this process: (exit code, stderr). An exception the
    command does not turn into an ``error:`` line propagates, failing the test (a user would have
    seen a traceback)."""
    err = io.StringIO()
    with (
        contextlib.chdir(cwd),
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors; sys.exit(None) is success
            code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    return code, err.getvalue()
