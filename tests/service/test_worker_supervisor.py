"""The worker supervisor of ``loravet serve``: backoff, a restart limit, and words for each."""

from __future__ import annotations

from dataclasses import dataclass

from loravet.worker_supervisor import RestartPolicy, WorkerSupervisor, describe_exit


@dataclass
class FakeProc:
    returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _supervised(policy: RestartPolicy) -> tuple[WorkerSupervisor, list[FakeProc], list[str], Clock]:
    procs: list[FakeProc] = [FakeProc()]
    lines: list[str] = []
    clock = Clock()

    def start(index: int) -> None:
        procs[index] = FakeProc()

    return (
        WorkerSupervisor(lambda: list(procs), start, lines.append, policy, clock),
        procs,
        lines,
        clock,
    )


def test_a_dead_worker_is_restarted_after_a_doubling_backoff() -> None:
    sup, procs, lines, clock = _supervised(
        RestartPolicy(first_delay_s=1, max_delay_s=3, max_restarts=9)
    )
    delays = []
    for _ in range(4):
        procs[0].returncode = -9
        assert sup.tick() is None  # schedules
        died_at = clock.now
        while procs[0].returncode is not None:
            clock.now += 0.25
            assert sup.tick() is None
        delays.append(clock.now - died_at)
    assert delays == [1.0, 2.0, 3.0, 3.0]  # doubling, capped
    assert "worker0 exited with status -9 (killed by SIGKILL); restarting in 1 s" in lines[0]
    assert lines[1] == "worker0 restarted"


def test_a_worker_that_keeps_dying_stops_the_service_with_the_reason() -> None:
    sup, procs, _, clock = _supervised(RestartPolicy(first_delay_s=1, max_restarts=2, window_s=100))
    reason = None
    for _ in range(10):
        procs[0].returncode = 1
        reason = sup.tick()
        if reason:
            break
        clock.now += 5
        sup.tick()
    assert reason is not None
    assert "worker0 exited with status 1 after 2 restarts within 100 s" in reason


def test_restarts_outside_the_window_are_forgotten() -> None:
    sup, procs, _, clock = _supervised(RestartPolicy(first_delay_s=1, max_restarts=1, window_s=10))
    for _ in range(5):  # one death every 20 s: never two within 10 s
        procs[0].returncode = -15
        assert sup.tick() is None
        clock.now += 2
        assert sup.tick() is None
        clock.now += 18


def test_exit_descriptions() -> None:
    assert describe_exit(-9) == "status -9 (killed by SIGKILL)"
    assert describe_exit(3) == "status 3"
