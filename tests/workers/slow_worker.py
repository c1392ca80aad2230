"""``loravet worker`` whose vetting pass sleeps first, so a test can kill it mid-job.

    python -m tests.workers.slow_worker [worker args]     # SLOW_VET_S seconds of sleep per batch

Only the timing changes: the worker, queue, Redis and store are the real ones.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from workers import worker_runtime
from workers.worker_cli import main

_original = worker_runtime.WorkerRuntime.vet


def _slow_vet(self: worker_runtime.WorkerRuntime, args: Sequence[Any]) -> list[Any]:
    time.sleep(float(os.environ.get("SLOW_VET_S", "60")))
    return _original(self, args)


worker_runtime.WorkerRuntime.vet = _slow_vet  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
