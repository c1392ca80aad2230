"""The quick budget of the reliability suite (``python -m benchmarks.reliability --quick``), one test
per part, each against its own real stack on loopback (embedded Redis, uvicorn, worker processes):
156 hostile and mutated uploads, 10 s of fuzzing, schemathesis, 40 concurrent uploads and a
backpressure flood, 2 worker SIGKILLs, a Redis restart, a webhook receiver outage, a 4 s content
store outage with the API and two workers on separate "hosts" (S3 bucket), the security checks. The
full budget's figures are in docs/reliability.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.reliability.runner import PARTS, QUICK, run

pytestmark = [pytest.mark.slow, pytest.mark.redis]


NEEDS = {"fuzz": "atheris", "conformance": "schemathesis"}
"""Parts whose tool is a dev dependency of its own (pinned in the dev extra)."""

IN_MAKE_SOAK_ONLY = ("supervisor",)
"""Parts left to ``make soak`` / ``make soak-quick``: the supervisor part (about 80 s) repeats, with
figures, what tests/service/test_serve_cli.py already asserts in ``make test`` (a SIGKILLed worker
under ``loravet serve`` is restarted, its jobs finish, the API stays up); CI stays under 20 min."""


@pytest.mark.parametrize("part", [p for p in PARTS if p not in IN_MAKE_SOAK_ONLY])
def test_quick_part_meets_its_goals(part: str, tmp_path: Path) -> None:
    if part in NEEDS:
        pytest.importorskip(NEEDS[part], reason=f"the {part} part needs {NEEDS[part]} (dev extra)")
    result = run(QUICK, (part,), work=tmp_path, log=lambda m: None)
    goals = {k: v for k, v in result["goals"].items() if k != "all"}
    assert goals, f"part {part} judged no goal"
    failed = {k: v for k, v in goals.items() if not v}
    assert not failed, (failed, result["parts"][part])
