"""The host phase of a run: discovery and per-worker probes, in a forked child process.

Why a child process and not a thread: a read that blocks in the kernel (a heartbeat on a
dead NFS mount, ``/proc/PID/cmdline`` of a process holding its mm lock in D state) cannot be
interrupted, and while any thread of ours sits in one, our process cannot exit either, so
the agent (which waits for the process before the next interval) would stop running us.
A forked child that hangs is simply left behind; the run reports what the child had
streamed back before the deadline and exits.

A one-shot run forks one child for its one host phase. A resident process (``run``,
``push``, ``status --watch``) keeps its child across cycles (``Resident``): forked at the
first cycle, asked for one host phase per cycle over a request pipe, and abandoned exactly
like a one-shot's child when it misses a cycle's deadline or fails; the next cycle forks a
fresh one. A kept child also keeps the ``/proc`` files it reads open between phases
(``procfs.hold``), which spares two of every three system calls per file.

The child sends one pickled message per step over a pipe: the discovered workers, then one
observed worker at a time (in the discovered order, so the parent knows which worker is
under way), progress markers for the other steps, so a deadline keeps every finished worker.
Judging happens in the parent (``judge.fleet``).
"""

from __future__ import annotations

import contextlib
import gc
import io
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
from workerwatch.host import heartbeat_files, log_offsets, peer, process, procfs, supervision
from workerwatch.host.discover import discover
from workerwatch.host.procfs import ProcGone
from workerwatch.judge.memory import WorkerMemory
from workerwatch.judge.states import STALLED
from workerwatch.judge.verdict import no_progress_since
from workerwatch.observations import (
    HeartbeatObservation,
    ProcessObservation,
    Worker,
    WorkerObservation,
)
from workerwatch.records import record

_LENGTH = struct.Struct(">I")
_CHUNK = 1 << 16
# While the child works, the parent reads its pipe at most every GATHER_PAUSE seconds
# instead of waking for each message (one or two per worker): those wake-ups cost the parent
# several ms of CPU per 200 workers. Nothing is lost meanwhile: the messages wait in the
# pipe (64 KiB, about 100 workers' worth; a full pipe only makes the child wait), and the
# end of the phase is seen at most one pause later.
GATHER_PAUSE = 0.004
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
    another group's worker has), where its work then happens (``host.work``). The other
    threads alone (``watched``) when they were not read so but the log is quiet
    (``_log_quiet``), whether or not the main thread moved.
    """
    if prev is not None and prev.state == STALLED and prev.log_pos and observation.log:
        dumps = log_offsets.stack_dumps(observation.worker.pid, observation.log.fds, prev.log_pos)
        if dumps:
            observation = replace(observation, log=replace(observation.log, stack_dumps=dumps))
    proc = observation.process
    if proc is None:
        return observation
    if prev is not None and no_progress_since(proc, prev):
        observation = _waiting(observation, proc, prev, exclude)
    if observation.tree is not None or not _log_quiet(observation, prev):
        return observation
    if proc.threads <= 1:
        # Nothing to read, but known: a thread started before the next run is new there.
        return replace(observation, watched=())
    from workerwatch.host import work

    pid = observation.worker.pid
    try:
        watched = work.watch_threads(pid, (prev.peers or {}) if prev is not None else {})
    except ProcGone:
        return observation
    except OSError as exc:
        log.error(f"thread probe for pid {pid}: {exc}")
        return observation
    return replace(observation, watched=watched)


def _log_quiet(observation: WorkerObservation, prev: WorkerMemory | None) -> bool:
    """Whether to read the threads of a worker whose work tree was not read.

    A job thread hung behind a main thread that keeps waking (a thread pool's dispatcher)
    is told from a listener by when it entered its wait: no earlier than the worker's
    last log write (judge/work.py ``hung_thread``). Seeing that entry takes a read before
    and one after it, so the threads are read on every run with no log write and on the
    first run with one after such a run; a worker writing its log on every run (busy)
    never pays. A worker with no log offsets (no log configured, or no access) is read
    on every run: the stat and syscall lines of each thread, a few µs apiece. At first
    sight too: a job that begins before the next run is then seen entering its wait.
    """
    log = observation.log
    if prev is None or log is None or log.source != "fd" or not log.fds or prev.log_pos is None:
        return True
    quiet_now = all(prev.log_pos.get(f.fd) == f.pos for f in log.fds)
    quiet_before = prev.last_log_activity != prev.last_seen
    return quiet_now or quiet_before


def _waiting(
    observation: WorkerObservation,
    proc: ProcessObservation,
    prev: WorkerMemory,
    exclude: Collection[int],
) -> WorkerObservation:
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
    handled: int = 0  # workers observed or skipped, and the discovery before them
    current: str = "discovery"  # the same, for people
    finished: bool = False
    crash: str | None = None
    child: int | None = None
    child_imported_psutil: bool = False

    @property
    def unprobed(self) -> int:
        return max(0, len(self.workers) - len(self.observed) - len(self.skipped))


def _frame(message: tuple) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


def _send(fd: int, message: tuple) -> None:
    """One message pickled on its own (a request, a log record, a crash)."""
    _write_all(fd, _frame(message))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# Marks a message of the phase's stream (``_Stream``) in its length prefix.
_STREAMED = 1 << 31


class _Stream:
    """The messages of one host phase, pickled by one pickler: what an earlier message
    carried (the discovered workers, inside every observation again; the classes, group
    names, paths) is sent once and referred to after, which halves the bytes and the
    pickling and unpickling CPU (about 3 ms a phase at 200 workers). The parent reads them
    with one unpickler per phase (``_gather``), so every message of the stream goes to the
    parent in order; log records and a crash are sent on their own (``_send``).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = io.BytesIO()
        self.pickler = pickle.Pickler(self.buffer, protocol=pickle.HIGHEST_PROTOCOL)

    def send(self, message: tuple) -> None:
        self.buffer.seek(0)
        self.buffer.truncate()
        self.pickler.dump(message)
        data = self.buffer.getvalue()
        _write_all(self.fd, _LENGTH.pack(len(data) | _STREAMED) + data)


def _child(
    fd: int, config: Config, memories: dict[str, WorkerMemory], now: float, skip: frozenset[str]
) -> None:
    send = _Stream(fd).send
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
    send(("discovered", found.workers, dict(errors)))
    # /proc evidence first, heartbeat files after: a heartbeat directory on a dead mount
    # must not keep every worker from being judged.
    writers: dict[int, set[str]] = {}  # per parent pid: the pipes it holds for writing
    pids = frozenset(w.pid for w in found.workers)
    for worker in found.workers:
        step = f"pid:{worker.pid}"
        if step in skip:
            send(("skipped", worker))
            continue
        # No "step" message: the parent knows the order (``_apply``), one message fewer each.
        errors = Counter()
        prev = memories.get(worker.key)
        stats = found.stats.get(worker.pid)
        observation = observe_worker(worker, groups[worker.group], errors, prev, stats)
        if observation is not None:
            observation = enrich(observation, prev, pids)
            observation = _supervision(observation, prev, writers)
        send(("observed", observation, dict(errors) if errors else None))
    live = {w.pid for w in found.workers}
    for group in config.groups:
        step = f"heartbeats:{group.name}"
        if not group.heartbeats or step in skip:
            continue
        send(("step", step, f"heartbeat files of group {group.name}"))
        errors = Counter()
        beats = read_heartbeats(group, now, errors)
        send(("heartbeats", group.name, beats, dict(errors)))
        for hb in beats:
            if hb.pid and hb.pid not in live and not os.path.exists(f"/proc/{hb.pid}"):
                log.warn(
                    f"heartbeat {hb.path} names pid {hb.pid}, which is not running: "
                    "the worker died without cleaning up"
                )
    # Whether a peer lookup imported psutil here: a resident parent then imports it too.
    send(("done", "psutil" in sys.modules))


def _close_inherited(keep: Collection[int]) -> None:
    """Drop every inherited fd, above all the state lock: a hung child must not hold it."""
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _reap() -> None:
    for pid in list(_abandoned):
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == 0:
                continue
        _abandoned.remove(pid)


def _fork(replies: int, keep: Collection[int], body: Any) -> int:
    """Fork a host-phase child that runs ``body()`` and exits; its pid in the parent.

    ``replies`` is the pipe it writes its messages (and its log records) to; every other
    inherited fd but ``keep`` is closed in the child. Raises OSError when it cannot fork.
    """
    pid = os.fork()
    if pid != 0:
        return pid
    status = 0  # the child: never returns
    try:
        # A one-shot child is short-lived: a collection pass would only touch (and so copy)
        # the parent's pages for nothing. A resident child freezes what it inherited instead.
        gc.disable()
        _close_inherited({replies, *keep})
        # Nothing of the agent's pipes may stay open in a child that could hang: the
        # agent waits for EOF on them. Log records travel over our pipe instead.
        devnull = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(devnull, target)
        log.set_sink(lambda level, text: _send(replies, ("log", level, text)))
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        body()
    except BaseException:
        status = 1
        with contextlib.suppress(BaseException):
            import traceback  # only for a crash: a few ms at every start otherwise

            _send(replies, ("crash", traceback.format_exc(limit=4)))
    finally:
        os._exit(status)


def run(
    config: Config,
    memories: dict[str, WorkerMemory],
    now: float,
    deadline: float,
    before_wait: Any = None,
    skip: frozenset[str] = frozenset(),
    resident: Resident | None = None,
) -> HostSnapshot:
    """Run the host phase in a child; return what it produced by ``deadline`` (monotonic).

    ``before_wait`` is called in the parent right after the fork (or the request to a kept
    child), to start other work (the backlog thread) only once no fork can copy its threads.
    ``resident``: the kept child of a resident process, used (and forked when it has none).
    """
    global _runs
    _runs += 1
    if _runs == 2:
        # A resident process: its children inherit these instead of each making them.
        from workerwatch import observations
        from workerwatch.host import work  # noqa: F401

        records.ready(observations)
    _reap()
    request = (memories, now, skip)  # what ``_child`` takes after the config
    if resident is not None:
        snapshot = resident.phase(config, request, deadline, before_wait)
    else:
        snapshot = _one_shot(config, request, deadline, before_wait)
    if snapshot.child_imported_psutil and _runs > 1 and "psutil" not in sys.modules:
        # The child imported psutil for a peer lookup (probes/peer.py imports it late, so
        # a one-shot run without blocked workers never pays for it). A resident process
        # imports it once here, so a child it forks later inherits it instead of
        # importing it again.
        import psutil  # noqa: F401
    return snapshot


def _one_shot(config: Config, request: tuple, deadline: float, before_wait: Any) -> HostSnapshot:
    """One child for one host phase."""
    read_fd, write_fd = os.pipe()
    try:
        pid = _fork(write_fd, (), lambda: _child(write_fd, config, *request))
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        if before_wait is not None:
            before_wait()
        return HostSnapshot(crash=f"cannot fork the host probes: {exc.strerror or exc}")
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
    return snapshot


class Resident:
    """The host-phase child of a resident process, kept across cycles.

    Forked at the first cycle with the process's config (fixed for the life of a resident
    process: ``run``, ``push`` and ``status --watch`` load it once), then sent one request
    per cycle: the remembered workers, the clock and the steps to skip. It answers with
    the same messages as a one-shot child, ending each phase with ``done``. A child that
    misses a deadline, crashes or goes away is settled like a one-shot child (killed and
    left behind if it may hang in the kernel), and the next cycle forks a fresh one.
    """

    def __init__(self) -> None:
        self.pid: int | None = None
        self._requests = -1  # the parent's write end of the request pipe
        self._replies = -1  # the parent's read end of the reply pipe

    def phase(
        self, config: Config, request: tuple, deadline: float, before_wait: Any
    ) -> HostSnapshot:
        problem = self._ask(request, deadline) if self.pid is not None else "none"
        if problem == "gone":  # it died since the last cycle: a fresh one
            self._end(HostSnapshot(crash="host probe process ended between cycles"))
        if problem in ("gone", "none"):
            try:
                self._start(config)
            except OSError as exc:
                if before_wait is not None:
                    before_wait()
                return HostSnapshot(crash=f"cannot fork the host probes: {exc.strerror or exc}")
            problem = self._ask(request, deadline)
        if before_wait is not None:
            before_wait()
        snapshot = HostSnapshot(child=self.pid)
        if problem is not None:
            # "gone": it ended at once; "late": it took no request by the deadline, and is
            # left behind like a child that hangs in discovery.
            if problem == "gone":
                snapshot.crash = "host probe process ended before its first request"
            self._end(snapshot)
            return snapshot
        try:
            _gather(self._replies, snapshot, deadline)
        except BaseException:
            snapshot.finished = False  # whatever stopped us, the child is not waited for
            self._end(snapshot)
            raise
        if not snapshot.finished:  # deadline or crash: this child is done with
            self._end(snapshot)
        return snapshot

    def _start(self, config: Config) -> None:
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        try:
            self.pid = _fork(reply_w, (request_r,), lambda: _serve(request_r, reply_w, config))
        except OSError:
            for fd in (request_r, request_w, reply_r, reply_w):
                os.close(fd)
            raise
        os.close(request_r)  # the child's ends
        os.close(reply_w)
        os.set_blocking(request_w, False)  # written within the deadline (``_ask``)
        self._requests, self._replies = request_w, reply_r

    def _ask(self, request: tuple, deadline: float) -> str | None:
        """Send one request by ``deadline``: None once sent, "gone" when the child's end of
        the pipe is closed, "late" when the deadline came first (a request longer than the
        pipe holds waits for the child to read it)."""
        view = memoryview(_frame(request))
        while view:
            try:
                view = view[os.write(self._requests, view) :]
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "late"
                select.select([], [self._requests], [], remaining)
            except OSError:  # EPIPE: not a BrokenPipeError for our caller (stdout is fine)
                return "gone"
        return None

    def _end(self, snapshot: HostSnapshot) -> None:
        """Close the pipes and settle the child (waited for, or killed and left behind)."""
        for fd in (self._requests, self._replies):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._requests = self._replies = -1
        if self.pid is not None:
            _settle(self.pid, snapshot)
        self.pid = None

    def close(self, timeout: float = 1.0) -> None:
        """End the child (idle between cycles): killed, and reaped within ``timeout``."""
        if self.pid is None:
            return
        pid = self.pid
        self._end(HostSnapshot(finished=False))
        waited = time.monotonic() + timeout
        while pid in _abandoned and time.monotonic() < waited:
            _reap()
            if pid in _abandoned:
                time.sleep(0.01)


def _receive(fd: int) -> Any:
    """One length-prefixed pickled message from a blocking pipe; None at its end."""
    head = _read_exactly(fd, _LENGTH.size)
    if head is None:
        return None
    body = _read_exactly(fd, _LENGTH.unpack(head)[0])
    return None if body is None else pickle.loads(body)


def _read_exactly(fd: int, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def _serve(requests: int, replies: int, config: Config) -> None:
    """The kept child: one host phase per request, until the parent closes the pipe."""
    # Objects inherited from the parent are never collected here: frozen, a collection
    # does not walk (and so copy) their pages. What a phase leaves is collected after it.
    gc.freeze()
    procfs.hold()
    while True:
        request = _receive(requests)
        if request is None:
            return
        _child(replies, config, *request)
        procfs.release_unread()
        del request
        gc.collect()


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
    feed = io.BytesIO()  # one streamed message at a time, for the phase's unpickler
    unpickler = pickle.Unpickler(feed)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            return
        chunk = os.read(fd, _CHUNK)
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
            streamed, size = size & _STREAMED, size & ~_STREAMED
            start = pos + _LENGTH.size
            if len(buffer) < start + size:
                break
            with memoryview(buffer) as view:
                if streamed:
                    feed.seek(0)
                    feed.truncate()
                    feed.write(view[start : start + size])
                    feed.seek(0)
                    message = unpickler.load()
                else:
                    message = pickle.loads(view[start : start + size])
            pos = start + size
            _apply(snapshot, message)
            if snapshot.finished or snapshot.crash:
                return
        del buffer[:pos]
        if len(chunk) < _CHUNK:
            # Let messages gather in the pipe rather than wake for each one.
            time.sleep(max(0.0, min(GATHER_PAUSE, deadline - time.monotonic())))


def _apply(snapshot: HostSnapshot, message: tuple) -> None:
    kind = message[0]
    if kind == "observed":
        if message[1] is not None:
            snapshot.observed.append(message[1])
        if message[2]:
            snapshot.errors.update(message[2])
        _next_worker(snapshot)
    elif kind == "discovered":
        snapshot.discovered = True
        snapshot.workers = message[1]
        snapshot.errors.update(message[2])
        _next_worker(snapshot)
    elif kind == "step":
        snapshot.step, snapshot.current = message[1], message[2]
    elif kind == "skipped":
        snapshot.skipped.append(message[1])
        _next_worker(snapshot)
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


def _next_worker(snapshot: HostSnapshot) -> None:
    """The step under way once a worker is done: the next one in the discovered order
    (after the last, it stays the last until the child names its next step)."""
    if snapshot.handled < len(snapshot.workers):
        worker = snapshot.workers[snapshot.handled]
        snapshot.step, snapshot.current = f"pid:{worker.pid}", f"pid {worker.pid} ({worker.group})"
    snapshot.handled += 1
