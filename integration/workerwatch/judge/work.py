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
* A unit *entered* its wait at the run that first saw it there (another wait, or no such
  unit, at the run before, which read the units too). Unknown without that earlier read:
  a thread already waiting when the worker is first seen is never *hung* (below).
* A thread is *hung* (``hung_thread``) when it is blocked for ``stall_after`` and entered
  its wait no earlier than the run that saw the worker's last sign of work (log write or
  beat), coming from an idle pool's futex wait or as a thread new since the run before:
  the worker's own job, not a listener that was already waiting before it, handled a
  message, or reconnected.
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
    entered: float | None = None  # the run that first saw it in this wait; None: unknown
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
    read_before: bool = False,
) -> TreeVerdict:
    """Each unit's progress over the interval, and the memory to keep for the next run.

    ``read_before``: the previous run read these units too, so a unit in another wait
    then (or not there then) entered its present wait since: ``entered`` is this run.
    """
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
        waits_in = _wait_key(wait)
        entered_now = read_before and (old is None or old.wait != waits_in)
        if entered_now:
            # Its earliest possible entry is the previous read; the latest, this run. The
            # latest is kept: the worker's last sign of work is dated the same way (the
            # run that saw it), so "entered no earlier than that sign" compares like with
            # like (README "Verdict rules": a wait entered in the same interval as the
            # worker's last log write counts as entered after it).
            # Only a thread that came from an idle pool's wait (a futex) or did not exist
            # at the previous read gets an entry time: one seen running or in another
            # socket wait before may be a listener that handled a message or reconnected
            # without logging (a load balancer's idle timeout), which is no job.
            came_idle = old is None or (old.wait or "").startswith("futex")
            unit.entered = now if came_idle else None
        elif old is not None and old.wait == waits_in:
            unit.entered = old.entered
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
            and (unit.new or not unit.progressed or entered_now)
        ):
            # New, unmoved, or entered this wait since the previous run (its wakeups
            # brought it here): in it since this run at the latest.
            since = now
        unit.blocked_since = since
        out.units.append(unit)
        out.memory[key] = UnitMemory(
            cpu=cpu, voluntary=voluntary, io=io, wait=waits_in, since=since, entered=unit.entered
        )
    return out


def hung_thread(tree: TreeVerdict, last_sign: float, now: float, stall_after: float) -> Unit | None:
    """The thread hung in the worker's own job, if one is (the rule in the module doc).

    Why "entered no earlier than the last sign of work": a healthy worker may keep a
    thread in an untimed socket read for hours (a broker consumer with heartbeats off, a
    pubsub listener, a server thread in accept). Such a thread entered its wait before
    the worker's last log write or beat, or it woke since (a message), and is never
    named. A job thread hung on a peer entered its wait when its job began, which the
    worker's last log line or busy beat announced, and has neither woken nor run since.
    A futex (an idle pool thread, a lock) is not a socket wait and is never named.
    """
    for unit in tree.units:
        if (
            unit.key.startswith("t")
            and not unit.progressed
            and unit.blocked_since is not None
            and unit.wait is not None
            and unit.entered is not None
            and unit.entered >= last_sign
            and now - unit.blocked_since >= stall_after
        ):
            return unit
    return None


def hung_story(unit: Unit, now: float) -> tuple[str, str]:
    """``thread 4321 blocked in recvfrom on 10.0.0.5:21 with no timeout for 131 s, ...``,
    and the same without the numbers that change from run to run."""
    wait = wait_text(unit.wait) if unit.wait is not None else "a wait"
    since = unit.blocked_since if unit.blocked_since is not None else now
    text = (
        f"{unit.label} blocked in {wait} with no timeout for {ago(now - since)}, 0 wakeups"
        "; it began waiting after the worker's last log write or beat"
    )
    # The thread's id stays in the stable form: it names the hang, and changes only with
    # it (as the peer's port does), never from run to run.
    return text, f"{unit.label} blocked in {wait} with no timeout"


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
