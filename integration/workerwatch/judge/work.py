"""The work tree's part of a verdict: which threads and descendants progressed, which one
is blocked, and what the main thread's wait is waiting for. Pure: no I/O, no clock.

Rules (README "Verdict rules"):

* A descendant progressed when it used CPU (``CLEAR_CPU``), read or wrote file or pipe
  bytes, or its main thread woke. A new descendant or thread counts as progress too: work
  was started.
* A thread progressed when it used CPU (``CLEAR_CPU``) or woke, unless it is
  *housekeeping*: it sits in a timed wait and used almost no CPU (an APM harvest thread, a
  metrics reporter). Housekeeping wakeups are not progress for the task.
* A unit is *blocked* when it sits in a wait with no timeout on a socket and neither woke
  nor ran since the previous run; it is what a waiting main thread is stalled on.
"""

from __future__ import annotations

from dataclasses import field

from workerwatch.judge.memory import MAX_UNITS, UnitMemory
from workerwatch.judge.states import CLEAR_CPU
from workerwatch.observations import WaitObservation, WorkTree
from workerwatch.records import record
from workerwatch.units import human_duration as ago

HOUSEKEEPING_CPU = 0.02  # seconds per interval, or HOUSEKEEPING_SHARE of it if more
HOUSEKEEPING_SHARE = 0.005


@record
class Unit:
    """One thread or descendant, judged over the interval."""

    key: str
    label: str  # "thread 4244", "child 4242 (lftp -e ...)"
    wait: WaitObservation | None
    progressed: bool = False
    housekeeping: bool = False
    blocked_since: float | None = None  # in an untimed socket wait, unwoken, since
    cpu_delta: float = 0.0
    new: bool = False


@record
class TreeVerdict:
    units: list[Unit] = field(default_factory=list)
    memory: dict[str, UnitMemory] = field(default_factory=dict)

    @property
    def progressed(self) -> list[Unit]:
        return [u for u in self.units if u.progressed]

    @property
    def blocked(self) -> list[Unit]:
        return [u for u in self.units if u.blocked_since is not None and not u.progressed]

    @property
    def housekeeping(self) -> list[Unit]:
        return [u for u in self.units if u.housekeeping]

    def timed(self, children: bool) -> list[Unit]:
        """Units (descendants with ``children``, else threads) in a timed wait."""
        return [
            u
            for u in self.units
            if u.key.startswith("p") == children and u.wait is not None and u.wait.timed
        ]


def wait_text(wait: WaitObservation) -> str:
    """``recvfrom on 10.0.0.5:21``."""
    peer = f" on {wait.peer}" if wait.peer else ""
    return f"{wait.syscall}{peer}"


def _wait_key(wait: WaitObservation | None) -> str | None:
    return None if wait is None else f"{wait.syscall} {wait.peer or ''}".strip()


def judge_tree(
    tree: WorkTree,
    prev: dict[str, UnitMemory] | None,
    now: float,
    interval: float | None,
) -> TreeVerdict:
    """Each unit's progress over the interval, and the memory to keep for the next run."""
    prev = prev or {}
    out = TreeVerdict()
    quiet_cpu = max(HOUSEKEEPING_CPU, HOUSEKEEPING_SHARE * (interval or 0.0))
    entries: list[tuple[str, str, float, int, int | None, WaitObservation | None, bool]] = []
    for t in tree.threads:
        entries.append(
            (f"t{t.tid}", f"thread {t.tid}", t.cpu_seconds, t.voluntary, None, t.wait, False)
        )
    for d in tree.descendants:
        label = (
            f"child {d.pid} ({d.cmdline})" if d.depth == 1 else f"descendant {d.pid} ({d.cmdline})"
        )
        entries.append((d.key, label, d.cpu_seconds, d.voluntary, d.io_chars, d.wait, True))
    for key, label, cpu, voluntary, io, wait, process in entries[:MAX_UNITS]:
        unit = Unit(key=key, label=label, wait=wait)
        old = prev.get(key)
        since = None
        if old is None:
            unit.new = unit.progressed = True
        else:
            unit.cpu_delta = max(0.0, cpu - old.cpu)
            woke = voluntary > old.voluntary
            moved = io is not None and old.io is not None and io != old.io
            ran = unit.cpu_delta >= CLEAR_CPU
            timed = wait is not None and wait.timed is True
            unit.housekeeping = not process and timed and unit.cpu_delta < quiet_cpu and not moved
            unit.progressed = not unit.housekeeping and (ran or woke or moved)
            if wait is not None and wait.untimed_network and not (woke or ran):
                same = old.wait == _wait_key(wait)
                since = old.since if same and old.since is not None else now
        if (
            wait is not None
            and wait.untimed_network
            and since is None
            and (unit.new or not unit.progressed)
        ):
            since = now
        unit.blocked_since = since
        out.units.append(unit)
        out.memory[key] = UnitMemory(
            cpu=cpu, voluntary=voluntary, io=io, wait=_wait_key(wait), since=since
        )
    return out


def describe(unit: Unit, now: float) -> str:
    """A unit's story for a reason: ``thread 4244 on CPU (+0.48 s)``, ``... blocked in ...``."""
    if unit.blocked_since is not None and unit.wait is not None:
        return (
            f"{unit.label} is blocked in {wait_text(unit.wait)} with no timeout"
            f" for {ago(now - unit.blocked_since)}, 0 wakeups"
        )
    if unit.new:
        return f"{unit.label} started"
    if unit.cpu_delta >= CLEAR_CPU:
        return f"{unit.label} on CPU (+{unit.cpu_delta:.2f} s)"
    return f"{unit.label} active"


def brief(unit: Unit) -> str:
    """The same without numbers or pids, for the metric attribute."""
    kind = unit.label.split(" ", 1)[0]
    if unit.blocked_since is not None and unit.wait is not None:
        return f"{kind} blocked in {wait_text(unit.wait)} with no timeout"
    return f"{kind} on CPU" if unit.cpu_delta >= CLEAR_CPU else f"{kind} active"
