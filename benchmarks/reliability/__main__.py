"""``python -m benchmarks.reliability [--quick|--full] [--parts a,b] [--out DIR]``.

Runs the reliability, security and load suite against the real stack on loopback (embedded Redis,
the API under uvicorn, resident worker processes) and writes
``benchmarks/results/reliability/reliability_<budget>.json`` (with provenance). Exit status 1 when
a goal is not met. ``--full`` takes 15-25 minutes on 2 cores; ``--quick`` about 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.reliability.runner import FULL, PARTS, QUICK, RESULTS_DIR, run, write
from core.cli_support import Parser


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m benchmarks.reliability", description=__doc__.split("\n\n")[1])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="the small budget (default)")
    g.add_argument(
        "--full",
        action="store_true",
        help="the full budget (500 uploads, 12 kills, 120 s fuzzing, ...)",
    )
    p.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}"
    )
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    p.add_argument(
        "--work",
        type=Path,
        help="keep the stacks' data and logs here (default: a temporary directory)",
    )
    p.add_argument(
        "--keep-corpus",
        action="store_true",
        help="merge the fuzzing corpus back into the repo (kept under 1 MB)",
    )
    args = p.parse_args(argv)
    budget = FULL if args.full else QUICK
    parts = tuple(x for x in args.parts.split(",") if x)
    result = run(budget, parts, work=args.work, keep_corpus=args.keep_corpus or args.full,
                 log=lambda m: print(m, file=sys.stderr, flush=True))  # fmt: skip
    path = write(result, args.out)
    print(json.dumps(result["goals"], indent=2))
    print(f"results: {path}")
    return 0 if result["goals"]["all"] else 1


if __name__ == "__main__":
    sys.exit(main())
