"""Which processes belong to which group: one scan of the process table per run.

Reads ``/proc/PID/{cmdline,cgroup,stat}`` directly with bounded reads; psutil is not
needed for this and a full ``process_iter`` would read more than we use.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from collections.abc import Iterable, Sequence

from workerwatch.config import Group
from workerwatch.host import procfs
from workerwatch.host.procfs import (
    PPID,
    STARTTIME,
    STATE,
    ProcGone,
    boot_time,
    clock_ticks,
    read_text,
)
from workerwatch.host.syscalls import name_of
from workerwatch.observations import Worker

# A supervisor parked in these waits for the child it forked to finish its job.
_WAITS_FOR_CHILD = frozenset({"wait4", "waitid"})

MAX_PIDFILE_BYTES = 64


class Discovery:
    """The workers found in one scan of the process table.

    This and ``_Proc`` are plain classes: a dataclass costs about half a millisecond to
    create at every start-up.
    """

    __slots__ = ("problems", "stats", "workers")

    def __init__(
        self,
        workers: list[Worker],
        problems: list[tuple[str, str]],
        stats: dict[int, list[str]] | None = None,
    ) -> None:
        self.workers = workers
        # Problems met while matching (unreadable pidfile...), for the errors metric.
        self.problems = problems
        # Each member's /proc/PID/stat fields as read here, so the process probe need not
        # read the file again (host/process.py).
        self.stats = stats if stats is not None else {}


def unit_from_cgroup(text: str) -> str | None:
    """The innermost ``*.service`` unit in ``/proc/PID/cgroup`` (v2 line first, then v1)."""
    lines = text.splitlines()
    ordered = [ln for ln in lines if ln.startswith("0::")] + [
        ln for ln in lines if ":name=systemd:" in ln
    ]
    for line in ordered:
        path = line.split(":", 2)[2]
        for part in reversed(path.split("/")):
            if part.endswith(".service"):
                return part
    return None


def _read_pidfiles(pattern: str, problems: list[tuple[str, str]]) -> set[int]:
    pids: set[int] = set()
    for path in sorted(glob.glob(pattern)):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            try:
                raw = os.read(fd, MAX_PIDFILE_BYTES)
            finally:
                os.close(fd)
            pid = int(raw.split()[0]) if raw.split() else 0
        except (OSError, ValueError) as exc:
            problems.append(("discover", f"pidfile {path!r} unreadable: {exc}"))
            continue
        if pid > 0:
            pids.add(pid)
    return pids


def _all_pids() -> Iterable[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


class _Proc:
    """The fields of one process that matching and naming need."""

    __slots__ = ("cmdline", "fields", "pid", "ppid", "start_ticks", "state", "unit")

    def __init__(
        self,
        pid: int,
        ppid: int,
        state: str,
        start_ticks: int,
        cmdline: str,
        unit: str | None,
        fields: list[str],
    ) -> None:
        self.pid = pid
        self.ppid = ppid
        self.state = state
        self.start_ticks = start_ticks
        self.cmdline = cmdline
        self.unit = unit
        self.fields = fields


def _could_match(group: Group, pid: int, cmdline: str, pidfile_pids: dict[str, set[int]]) -> bool:
    """The group's pidfile and cmdline rules hold (its unit rule is checked later)."""
    rules = group.match
    if rules.pidfile is not None and pid not in pidfile_pids[group.name]:
        return False
    return rules.cmdline is None or re.search(rules.cmdline, cmdline) is not None


# The command lines that matched no group at the last scan, by pid, and the cmdline rules
# they were matched against. A process whose command line reads the same bytes again is
# not matched again: the same bytes against the same rules give the same answer (used when
# no group has a pidfile rule, whose pids change). Rebuilt by each scan, so it holds only
# the processes of the last one; it matters in a resident child, which scans every cycle.
_unmatched: tuple[tuple[str | None, ...], dict[int, bytes]] = ((), {})


def _read_proc(
    pid: int,
    need_unit: bool,
    groups: Sequence[Group] = (),
    pidfile_pids: dict[str, set[int]] | None = None,
    unmatched: tuple[dict[int, bytes], dict[int, bytes]] | None = None,
) -> _Proc | None:
    """The process's fields, or None when gone, a zombie, or (given ``groups``) no match.

    With ``groups``, the command line is read first and a process no group can match is
    left there: most of a host's processes then cost one read instead of two.
    ``unmatched``: (the last scan's command lines that matched nothing, this scan's).
    """
    try:
        raw = procfs.read_bytes(f"/proc/{pid}/cmdline", 8192)
        if unmatched is not None and unmatched[0].get(pid) == raw:
            unmatched[1][pid] = raw
            return None
        cmdline = raw.decode("utf-8", "replace").replace("\x00", " ").strip()
        if groups and not any(_could_match(g, pid, cmdline, pidfile_pids or {}) for g in groups):
            if unmatched is not None:
                unmatched[1][pid] = raw
            return None
        fields = procfs.stat(f"/proc/{pid}/stat")
        state, ppid, start = fields[STATE], int(fields[PPID]), int(fields[STARTTIME])
        if state in ("Z", "X"):
            return None
        unit = unit_from_cgroup(read_text(f"/proc/{pid}/cgroup")) if need_unit else None
    except (ProcGone, PermissionError, ValueError, IndexError):
        return None
    return _Proc(pid, ppid, state, start, cmdline, unit, fields)


def _matches(group: Group, proc: _Proc, pidfile_pids: dict[str, set[int]]) -> bool:
    rules = group.match
    if rules.pidfile is not None and proc.pid not in pidfile_pids[group.name]:
        return False
    if rules.cmdline is not None and not re.search(rules.cmdline, proc.cmdline):
        return False
    return rules.systemd_unit is None or (
        proc.unit is not None and fnmatch.fnmatchcase(proc.unit, rules.systemd_unit)
    )


def discover(
    groups: Sequence[Group],
    exclude: Iterable[int] = (),
    known_units: dict[int, tuple[int, str | None]] | None = None,
) -> Discovery:
    """Match every process against every group in one pass over the process table.

    ``known_units`` (pid -> (start ticks, unit)) are units read by an earlier run: a
    process keeps its cgroup for life in practice, so for the same (pid, start) the
    ``cgroup`` file is not read again when no group matches on the unit.
    """
    problems: list[tuple[str, str]] = []
    pidfile_pids = {
        g.name: _read_pidfiles(g.match.pidfile, problems) for g in groups if g.match.pidfile
    }
    # Never ourselves: the host phase runs in a child of the integration, whose command
    # line may well match a loose regex such as 'worker'.
    excluded = {os.getpid(), os.getppid(), *exclude}
    if all(g.match.pidfile for g in groups):
        candidates: Iterable[int] = sorted(set().union(*pidfile_pids.values()))
    else:
        candidates = _all_pids()
    need_unit = any(g.match.systemd_unit for g in groups)
    ticks, boot = clock_ticks(), boot_time()

    global _unmatched
    rules = tuple(g.match.cmdline for g in groups)
    unmatched = None
    if groups and not pidfile_pids:
        unmatched = (_unmatched[1] if _unmatched[0] == rules else {}, {})
    procs: dict[int, _Proc] = {}
    members: dict[int, Group] = {}
    for pid in candidates:
        if pid in excluded:
            continue
        proc = _read_proc(pid, need_unit, groups, pidfile_pids, unmatched)
        if proc is None or is_integration(proc.cmdline):
            continue
        for group in groups:
            if _matches(group, proc, pidfile_pids):
                procs[pid] = proc
                members[pid] = group
                break  # first group wins: a process is one worker

    if not need_unit:
        # The unit names workers even when matching did not need it; read it only for members.
        for proc in procs.values():
            known = (known_units or {}).get(proc.pid)
            if known is not None and known[0] == proc.start_ticks:
                proc.unit = known[1]
                continue
            try:
                proc.unit = unit_from_cgroup(read_text(f"/proc/{proc.pid}/cgroup"))
            except (ProcGone, PermissionError):
                proc.unit = None

    if unmatched is not None:
        _unmatched = (rules, unmatched[1])
    horses = _horses(procs, members)
    for pid in horses:
        del procs[pid]

    # A unit names a worker only when it holds exactly one top-level member: workers under
    # supervisord, cron or a user session share one unit, and children share their parent's.
    roots: dict[str, int] = {}
    for proc in procs.values():
        parent = procs.get(proc.ppid)
        if proc.unit and not (parent is not None and parent.unit == proc.unit):
            roots[proc.unit] = roots.get(proc.unit, 0) + 1
    workers = []
    for pid, proc in sorted(procs.items()):
        unit = proc.unit
        parent = procs.get(proc.ppid)
        if unit and (roots.get(unit, 0) > 1 or (parent is not None and parent.unit == unit)):
            unit = f"{unit}/{pid}"
        pool = parent is not None and members[parent.pid] is members[pid]
        workers.append(
            Worker(
                group=members[pid].name,
                pid=pid,
                create_time=round(boot + proc.start_ticks / ticks, 2),
                unit=unit,
                cmdline=proc.cmdline[:1024],
                start_ticks=proc.start_ticks,
                parent=proc.ppid if pool else None,
                parent_key=f"{proc.ppid}:{parent.start_ticks}" if pool and parent else None,
                horses=tuple(sorted(h for h, owner in horses.items() if owner == pid)),
            )
        )
    return Discovery(workers, problems, {pid: proc.fields for pid, proc in procs.items()})


def _horses(procs: dict[int, _Proc], members: dict[int, Group]) -> dict[int, int]:
    """Work horses: {child pid: parent pid} for the members whose parent, a member of the
    same group, waits for them in wait4/waitid (RQ forks one per job and waits for it by
    its pid).

    A member child its parent does not wait for is a pool process (Celery prefork: the
    parent sits in its event loop) and stays a worker of its own. Only the parents of
    member children are asked, one read of their main thread's syscall file each.
    """
    children: dict[int, list[int]] = {}  # parent pid -> its member children
    for pid, proc in procs.items():
        parent = procs.get(proc.ppid)
        if parent is not None and members[parent.pid] is members[pid]:
            children.setdefault(parent.pid, []).append(pid)
    horses: dict[int, int] = {}
    for parent, kids in children.items():
        target = _waits_for(parent)
        if target is None:
            continue
        # Waiting for one named child makes that child the job; waiting for any child
        # makes its only member child the job, while several are a pool it supervises.
        for pid in kids:
            if target == pid or (target == -1 and len(kids) == 1):
                horses[pid] = parent
    return horses


def _waits_for(pid: int) -> int | None:
    """The child pid the process's main thread waits for (-1: any child), or None."""
    try:
        parts = read_text(f"/proc/{pid}/syscall", 256).split()
    except (ProcGone, PermissionError):
        return None
    if len(parts) < 3 or not parts[0].isdigit() or name_of(int(parts[0])) not in _WAITS_FOR_CHILD:
        return None
    if name_of(int(parts[0])) == "waitid":
        # waitid(idtype, id, ...): P_PID (1) names one child; P_ALL and P_PGID stand for any.
        return int(parts[2], 16) if int(parts[1], 16) == 1 else -1
    target = int(parts[1], 16)
    # wait4(pid, ...): a positive pid is that child; -1 (or a group) any child.
    return target if 0 < target < 1 << 31 else -1


_SELF = re.compile(r"(^|[\s/])(-m workerwatch|nri-workerwatch(\.pyz|-[^\s/]*\.pyz)?)(\s|$)")


def is_integration(cmdline: str) -> bool:
    """A process of nri-workerwatch itself (another run, status, a hung probe child)."""
    return _SELF.search(cmdline) is not None
