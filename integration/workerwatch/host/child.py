"""The host phase of a run: discovery and per-worker probes, in a forked child process.

Why a child process and not a thread: a read that blocks in the kernel (a heartbeat on a
dead NFS mount, ``/proc/PID/cmdline`` of a process holding its mm lock in D state) cannot be
interrupted, and while any thread of ours sits in one, our process cannot exit either, so
the agent (which waits for the process before the next interval) would stop running us.
A forked child that hangs is simply left behind; the run reports what the child had
streamed back before the deadline and exits.

The child sends one pickled message per step over a pipe: progress markers, the discovered
workers, then one observed worker at a time, so a deadline keeps every finished worker.
Judging happens in the parent (``judge.fleet``).
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import select
import signal
import struct
import sys
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import field, replace
from typing import Any

from workerwatch import log, records
from workerwatch.config import Config, Group
from workerwatch.host import heartbeat_files, log_offsets, peer, process, supervision
from workerwatch.host.discover import discover
from workerwatch.host.procfs import ProcGone
from workerwatch.judge.memory import WorkerMemory
from workerwatch.judge.states import STALLED
from workerwatch.judge.verdict import no_progress_since
from workerwatch.observations import HeartbeatObservation, Worker, WorkerObservation
from workerwatch.records import record

_LENGTH = struct.Struct(">I")
GATHER_PAUSE = 0.004  # seconds between two reads of the child's messages
# Children left hung in the kernel by earlier cycles; reaped once they come back.
_abandoned: list[int] = []
# Host phases run by this process: more than one means a resident process (``run``,
# ``status --watch``), whose later children inherit what the parent has imported.
_runs = 0


def read_heartbeats(group: Group, now: float, errors: Counter[str]) -> list[HeartbeatObservation]:
    """The group's heartbeat files; a file that cannot be used is counted and said once."""
    pattern = group.heartbeats or ""
    try:
        beats, problems = heartbeat_files.observe(pattern, now)
    except OSError as exc:
        errors["heartbeat"] += 1
        log.error(f"heartbeats of group {group.name} ({pattern}): {exc}")
        return []
    for problem in problems:
        errors["heartbeat"] += 1
        log.warn(problem)
    return beats


def observe_worker(
    worker: Worker,
    group: Group,
    errors: Counter[str],
    prev: WorkerMemory | None = None,
    proc_stat: list[str] | None = None,
) -> WorkerObservation | None:
    """The /proc evidence for one process; None when it exited while we looked.

    Heartbeats are matched later, in the parent, once the group's files could be read.
    """
    notes: list[str] = []
    try:
        proc = process.observe(worker.pid, always_wchan=False, proc_stat=proc_stat)
    except ProcGone:
        return None
    except (OSError, ValueError, IndexError) as exc:
        errors["process"] += 1
        log.error(f"process probe for pid {worker.pid}: {exc}")
        proc = None
    try:
        known = None
        if prev is not None and prev.log_paths is not None and prev.log_inodes is not None:
            inodes = prev.log_inodes
            known = {fd: (p, inodes[fd]) for fd, p in prev.log_paths.items() if fd in inodes}
            if len(known) != len(prev.log_paths):
                known = None
        logs = log_offsets.observe(
            worker.pid, group.logs, known, prev.open_fds if prev is not None else None
        )
    except ProcGone:
        return None
    except (OSError, ValueError) as exc:
        errors["log"] += 1
        log.error(f"log probe for pid {worker.pid}: {exc}")
        logs = None
    if logs is not None and logs.source != "fd" and group.logs:
        notes.append("fd table unreadable")
    return WorkerObservation(worker=worker, log=logs, process=proc, notes=tuple(notes))


def enrich(
    observation: WorkerObservation, prev: WorkerMemory | None, exclude: Collection[int] = ()
) -> WorkerObservation:
    """The costlier evidence, only for a worker whose main thread did not move since last run.

    Where the main thread waits, with its timeout and the socket peer; when that is not a
    socket, the worker's other threads and its descendants (not in ``exclude``, the pids
    another group's worker has), where its work then happens (``host.work``).
    """
    if prev is not None and prev.state == STALLED and prev.log_pos and observation.log:
        dumps = log_offsets.stack_dumps(observation.worker.pid, observation.log.fds, prev.log_pos)
        if dumps:
            observation = replace(observation, log=replace(observation.log, stack_dumps=dumps))
    proc = observation.process
    if proc is None or prev is None or not no_progress_since(proc, prev):
        return observation
    pid = observation.worker.pid
    # Imported here: only a worker whose main thread did not move needs the wait and
    # work-tree readers (a resident process imports them once, before its first fork).
    from workerwatch.host import work

    try:
        main, tree = work.observe(pid, proc.threads, exclude, prev.peers or {})
    except ProcGone:
        return observation
    except OSError as exc:
        log.error(f"wait probe for pid {pid}: {exc}")
        return observation
    if main is None:  # no ptrace access: the fd syscall's peer as before
        if proc.syscall_fd is None:
            return observation
        return replace(observation, peer=peer.resolve(pid, proc.syscall_fd))
    return replace(observation, process=replace(proc, main_wait=main), peer=main.peer, tree=tree)


def _supervision(
    observation: WorkerObservation, prev: WorkerMemory | None, writers: dict[int, set[str]]
) -> WorkerObservation:
    """A worker's work horse (the newest, when it has several), or what its pool process
    waits for from its parent (README "Pools and work horses")."""
    worker, proc = observation.worker, observation.process
    for pid in sorted(worker.horses, reverse=True):
        horse = supervision.observe_horse(pid, prev)
        if horse is not None:
            return replace(observation, horse=horse)
    if worker.parent is not None and proc is not None:
        how = supervision.waits_for_parent(worker.pid, worker.parent, proc, writers)
        if how is not None:
            return replace(observation, waits_for_parent=how)
    return observation


@record
class HostSnapshot:
    """What the host-phase child streamed back by the deadline."""

    discovered: bool = False
    workers: list[Worker] = field(default_factory=list)
    observed: list[WorkerObservation] = field(default_factory=list)
    skipped: list[Worker] = field(default_factory=list)
    heartbeats: dict[str, list[HeartbeatObservation]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    step: str = "discovery"  # key of the step under way: "pid:N", "heartbeats:GROUP"
    current: str = "discovery"  # the same, for people
    finished: bool = False
    crash: str | None = None
    child: int | None = None
    child_imported_psutil: bool = False

    @property
    def unprobed(self) -> int:
        return max(0, len(self.workers) - len(self.observed) - len(self.skipped))


def _send(fd: int, message: tuple) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_LENGTH.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _child(
    fd: int, config: Config, memories: dict[str, WorkerMemory], now: float, skip: frozenset[str]
) -> None:
    groups = {g.name: g for g in config.groups}
    errors: Counter[str] = Counter()
    known_units = {}
    for memory in memories.values():
        if memory.cgroup_unit is not None and memory.start_ticks is not None:
            known_units[memory.pid] = (memory.start_ticks, memory.cgroup_unit or None)
    found = discover(config.groups, known_units=known_units)
    for probe, message in found.problems:
        errors[probe] += 1
        log.error(message)
    _send(fd, ("discovered", found.workers, dict(errors)))
    # /proc evidence first, heartbeat files after: a heartbeat directory on a dead mount
    # must not keep every worker from being judged.
    writers: dict[int, set[str]] = {}  # per parent pid: the pipes it holds for writing
    pids = frozenset(w.pid for w in found.workers)
    for worker in found.workers:
        step = f"pid:{worker.pid}"
        if step in skip:
            _send(fd, ("skipped", worker))
            continue
        _send(fd, ("step", step, f"pid {worker.pid} ({worker.group})"))
        errors = Counter()
        prev = memories.get(worker.key)
        stats = found.stats.get(worker.pid)
        observation = observe_worker(worker, groups[worker.group], errors, prev, stats)
        if observation is not None:
            observation = enrich(observation, prev, pids)
            observation = _supervision(observation, prev, writers)
        _send(fd, ("observed", worker, observation, dict(errors)))
    live = {w.pid for w in found.workers}
    for group in config.groups:
        step = f"heartbeats:{group.name}"
        if not group.heartbeats or step in skip:
            continue
        _send(fd, ("step", step, f"heartbeat files of group {group.name}"))
        errors = Counter()
        beats = read_heartbeats(group, now, errors)
        _send(fd, ("heartbeats", group.name, beats, dict(errors)))
        for hb in beats:
            if hb.pid and hb.pid not in live and not os.path.exists(f"/proc/{hb.pid}"):
                log.warn(
                    f"heartbeat {hb.path} names pid {hb.pid}, which is not running: "
                    "the worker died without cleaning up"
                )
    # Whether a peer lookup imported psutil here: a resident parent then imports it too.
    _send(fd, ("done", "psutil" in sys.modules))


def _close_inherited(keep: int) -> None:
    """Drop every inherited fd, above all the state lock: a hung child must not hold it."""
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd > 2 and fd != keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _reap() -> None:
    for pid in list(_abandoned):
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == 0:
                continue
        _abandoned.remove(pid)


def run(
    config: Config,
    memories: dict[str, WorkerMemory],
    now: float,
    deadline: float,
    before_wait: Any = None,
    skip: frozenset[str] = frozenset(),
) -> HostSnapshot:
    """Run the host phase in a child; return what it produced by ``deadline`` (monotonic).

    ``before_wait`` is called in the parent right after the fork, to start other work
    (the backlog thread) only once no fork can copy its threads.
    """
    global _runs
    _runs += 1
    if _runs == 2:
        # A resident process: its children inherit these instead of each making them.
        from workerwatch import observations
        from workerwatch.host import work  # noqa: F401

        records.ready(observations)
    _reap()
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        if before_wait is not None:
            before_wait()
        return HostSnapshot(crash=f"cannot fork the host probes: {exc.strerror or exc}")
    if pid == 0:  # the child: never returns
        status = 0
        try:
            # Short-lived: a collection pass here would only touch (and so copy) the
            # parent's pages for nothing.
            gc.disable()
            os.close(read_fd)
            _close_inherited(write_fd)
            # Nothing of the agent's pipes may stay open in a child that could hang: the
            # agent waits for EOF on them. Log records travel over our pipe instead.
            devnull = os.open(os.devnull, os.O_RDWR)
            for target in (0, 1, 2):
                os.dup2(devnull, target)
            log.set_sink(lambda level, text: _send(write_fd, ("log", level, text)))
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _child(write_fd, config, memories, now, skip)
        except BaseException:
            status = 1
            with contextlib.suppress(BaseException):
                import traceback  # only for a crash: a few ms at every start otherwise

                _send(write_fd, ("crash", traceback.format_exc(limit=4)))
        finally:
            os._exit(status)
    os.close(write_fd)
    if before_wait is not None:
        before_wait()
    snapshot = HostSnapshot(child=pid)
    try:
        _gather(read_fd, snapshot, deadline)
    except BaseException:
        snapshot.finished = False  # whatever stopped us, the child is not waited for
        raise
    finally:
        os.close(read_fd)
        _settle(pid, snapshot)
    if snapshot.child_imported_psutil and _runs > 1 and "psutil" not in sys.modules:
        # The child imported psutil for a peer lookup (probes/peer.py imports it late, so
        # a one-shot run without blocked workers never pays for it). A resident process
        # imports it once here, so its later children inherit it instead of importing it
        # again every cycle.
        import psutil  # noqa: F401
    return snapshot


def _settle(pid: int, snapshot: HostSnapshot) -> None:
    if snapshot.finished or snapshot.crash:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _abandoned.append(pid)  # it may be hung in the kernel; do not wait for it
        _reap()


def _gather(fd: int, snapshot: HostSnapshot, deadline: float) -> None:
    buffer = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            return
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            if not snapshot.finished and snapshot.crash is None:
                snapshot.crash = "host probe process ended unexpectedly"
            return
        buffer += chunk
        # Messages are read at an offset and the consumed part dropped once per chunk:
        # slicing the buffer after every message copied it hundreds of times per run.
        pos = 0
        while len(buffer) - pos >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(buffer, pos)
            start = pos + _LENGTH.size
            if len(buffer) < start + size:
                break
            with memoryview(buffer) as view:
                message = pickle.loads(view[start : start + size])
            pos = start + size
            _apply(snapshot, message)
            if snapshot.finished or snapshot.crash:
                return
        del buffer[:pos]
        # Let a few workers' messages gather before reading again: woken for each of the
        # child's 2 writes per worker, the parent spent ~3 ms of a 200-worker run in
        # select and read. The child streams ~35 KB in a pause at 200 workers, within the
        # pipe's 64 KiB (a fuller pipe only makes its write wait); no pause outlasts the
        # deadline, and what arrived by then is kept as before.
        time.sleep(max(0.0, min(GATHER_PAUSE, deadline - time.monotonic())))


def _apply(snapshot: HostSnapshot, message: tuple) -> None:
    kind = message[0]
    if kind == "discovered":
        snapshot.discovered = True
        snapshot.workers = message[1]
        snapshot.errors.update(message[2])
    elif kind == "step":
        snapshot.step, snapshot.current = message[1], message[2]
    elif kind == "observed":
        if message[2] is not None:
            snapshot.observed.append(message[2])
        snapshot.errors.update(message[3])
    elif kind == "skipped":
        snapshot.skipped.append(message[1])
    elif kind == "heartbeats":
        snapshot.heartbeats[message[1]] = message[2]
        snapshot.errors.update(message[3])
    elif kind == "done":
        snapshot.finished = True
        snapshot.child_imported_psutil = len(message) > 1 and bool(message[1])
    elif kind == "log":
        log.write(message[1], message[2])
    elif kind == "crash":
        snapshot.crash = message[1]
