"""The vocabulary of judging: the five states, the thresholds the rules use, and the
verdict records that the output, ``status`` and ``diagnose`` read."""

from __future__ import annotations

from dataclasses import field

from workerwatch.records import record

UNKNOWN, IDLE, WORKING, STALLED, GONE = "unknown", "idle", "working", "stalled", "gone"
STATES = (UNKNOWN, IDLE, WORKING, STALLED, GONE)

CLEAR_CPU = 0.05  # seconds of main-thread CPU that count as a clear activity signal
BUSY_CPU_SHARE = 0.05  # share of the interval on CPU that counts as working
# A supervisor parked in wait4 lets its child processes work; they are judged themselves.
WAITS_FOR_CHILDREN = frozenset({"wait4", "waitid"})
RECOVERY_RUNS = 2  # runs in a row with wakeups that clear a stall without other activity


@record
class WorkerVerdict:
    """One worker's verdict and the figures it rests on."""

    name: str
    group: str
    pid: int
    state: str
    reason: str
    summary: str = ""  # the reason without numbers: stable while the situation is
    up: bool = True
    silent_seconds: float | None = None
    bytes_written: int | None = None
    interval_s: float | None = None
    heartbeat_age: float | None = None
    cpu_delta: float | None = None
    wakeups: int | None = None
    blocked_seconds: float | None = None
    blocked_syscall: str | None = None
    blocked_peer: str | None = None
    blocked_timeout: float | None = None  # seconds the wait may last; -1 for no timeout
    waits_up_to: float | None = None  # the worker is in a wait that ends by itself (-1: unknown)
    # Peers waited on without a timeout: this run (peer -> waits), and every one seen so far.
    untimed_waits: dict[str, int] = field(default_factory=dict)
    untimed_peers: list[str] = field(default_factory=list)
    task_name: str | None = None
    task_seconds: float | None = None
    restarted: bool = False
    started: float | None = None  # process start time, for uptime
    previous_state: str | None = None
    # Seconds without a log write or a beat (the silence the stall rule measures).
    quiet_seconds: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def stalled(self) -> bool:
        return self.state == STALLED


@record
class GroupVerdict:
    """A group's verdict: workers running, expected and stalled, and why."""

    group: str
    running: int
    expected: int | None
    stalled: int
    reason: str
    pool_processes: int = 0  # pool processes of its workers (not counted in running)

    @property
    def missing(self) -> int:
        return max(0, (self.expected or 0) - self.running)
