"""Keep ``loravet serve``'s workers running: restart one that dies, with backoff and a limit.

Why: on one machine the worker is the process most likely to die (the kernel's OOM killer picks the
largest process, and a worker holds the predictors). Its jobs survive in Redis (RQ requeues them),
so the right answer is a new worker, not taking the API down with it. A worker that keeps dying is
a real fault (bad predictors, no memory at all): after ``max_restarts`` restarts within
``window_s`` the supervisor gives up and says why, instead of restarting forever.
"""

from __future__ import annotations

import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


class WorkerHandle(Protocol):
    """What the supervisor needs of a worker process (``subprocess.Popen`` has it)."""

    returncode: int | None

    def poll(self) -> int | None: ...


@dataclass(frozen=True)
class RestartPolicy:
    """Backoff doubles from ``first_delay_s`` up to ``max_delay_s``; at most ``max_restarts``
    restarts of one worker within ``window_s``."""

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    max_restarts: int = 5
    window_s: float = 600.0


def describe_exit(returncode: int) -> str:
    """``-9`` -> ``status -9 (killed by SIGKILL)``: what an operator can act on."""
    if returncode < 0:
        try:
            return f"status {returncode} (killed by {signal.Signals(-returncode).name})"
        except ValueError:
            return f"status {returncode}"
    return f"status {returncode}"


@dataclass
class _WorkerState:
    restarts: deque[float] = field(default_factory=deque)  # monotonic times of recent restarts
    due: float | None = None  # when the pending restart runs


class WorkerSupervisor:
    """Call :meth:`tick` periodically. It restarts dead workers through ``start_worker(index)`` and
    returns a reason (a string) once a worker has died too often; ``log`` receives one line per
    event."""

    def __init__(
        self,
        workers: Callable[[], list[WorkerHandle | None]],
        start_worker: Callable[[int], object],
        log: Callable[[str], None],
        policy: RestartPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.workers, self.start_worker, self.log = workers, start_worker, log
        self.policy = policy or RestartPolicy()
        self.clock = clock
        self.state: dict[int, _WorkerState] = {}

    def tick(self) -> str | None:
        now = self.clock()
        for index, proc in enumerate(self.workers()):
            if proc is None or proc.poll() is None:
                continue
            state = self.state.setdefault(index, _WorkerState())
            if state.due is None:
                reason = self._schedule(index, state, proc, now)
                if reason:
                    return reason
            elif now >= state.due:
                state.due = None
                state.restarts.append(now)
                self.start_worker(index)
                self.log(f"worker{index} restarted")
        return None

    def _schedule(
        self, index: int, state: _WorkerState, proc: WorkerHandle, now: float
    ) -> str | None:
        p = self.policy
        while state.restarts and now - state.restarts[0] > p.window_s:
            state.restarts.popleft()
        how = describe_exit(proc.returncode if proc.returncode is not None else 0)
        if len(state.restarts) >= p.max_restarts:
            return (
                f"worker{index} exited with {how} after {len(state.restarts)} restarts within "
                f"{p.window_s:.0f} s; not restarting it again (its log says why it dies)"
            )
        delay = min(p.first_delay_s * 2 ** len(state.restarts), p.max_delay_s)
        state.due = now + delay
        self.log(
            f"worker{index} exited with {how}; restarting in {delay:.0f} s "
            f"(restart {len(state.restarts) + 1} of at most {p.max_restarts} per {p.window_s:.0f} s); "
            "its queued and running jobs wait in Redis"
        )
        return None
