"""Typed observations: what the probes saw, and nothing they concluded.

Probes fill these; ``verdict`` reads them. A field is ``None`` when the evidence could
not be read (permissions, a process exit race), which the verdict treats as unknown.
"""

from __future__ import annotations

from dataclasses import field
from typing import Union

from workerwatch.output.catalogue import CATALOGUE
from workerwatch.records import record

# A metric attribute's value. Spelled with Union: ``records`` evaluates the annotations that
# use it at run time, where ``str | int`` inside brackets needs CPython 3.10.
AttributeValue = Union[str, int, float, bool]


@record(frozen=True)
class Worker:
    """A discovered process that belongs to a group."""

    group: str
    pid: int
    create_time: float
    unit: str | None = None  # systemd service unit, e.g. "worker@3.service"
    cmdline: str = ""
    start_ticks: int | None = None  # start time in clock ticks since boot
    # Supervision (README "Pools and work horses"): a pool process names the worker of its
    # group that forked it; a worker lists the children of its group it waits for in
    # wait4 (its work horses), which are part of its work and no workers of their own.
    parent: int | None = None
    parent_key: str | None = None
    horses: tuple[int, ...] = ()

    @property
    def key(self) -> str:
        # (pid, start) so a recycled pid never inherits another process's history. Ticks
        # since boot, not wall time: a stepped clock moves the boot time computed from it.
        start = self.start_ticks if self.start_ticks is not None else f"{self.create_time:.2f}"
        return f"{self.pid}:{start}"


@record(frozen=True)
class LogFd:
    """One log file a worker holds open for writing, and its fd's offset."""

    fd: int
    path: str
    pos: int
    inode: int | None = None  # fdinfo's ino: (Linux 5.14+), to recognise the file next run


@record(frozen=True)
class LogObservation:
    """The worker's own write offsets into its log files (or a coarse mtime fallback)."""

    fds: tuple[LogFd, ...] = ()
    # When the fd table cannot be read, the newest mtime of the group's log globs: coarse,
    # because a shared file stays fresh while any worker writes.
    mtime: float | None = None
    source: str = "fd"  # "fd", "mtime" or "none"
    # Open fds of the process (st_size of /proc/PID/fd, Linux 6.2+; None when unknown).
    open_fds: int | None = None
    # Log fds whose bytes since the previous run are only a Python stack dump (faulthandler,
    # the heartbeat library's SIGUSR1 handler): someone asked a hung worker where it is.
    stack_dumps: tuple[int, ...] = ()


@record(frozen=True)
class Task:
    """The task a heartbeat says the worker is running."""

    name: str
    id: str | None
    started: float | None


@record(frozen=True)
class HeartbeatObservation:
    """One heartbeat file as read this run."""

    path: str
    beat_time: float  # time of the last beat (body "time", else file mtime)
    seq: int | None = None
    state: str | None = None  # "idle" / "busy" / None for a plain file
    task: Task | None = None
    pid: int | None = None
    worker: str | None = None
    problem: str | None = None  # why the body was not used, e.g. "not valid JSON"


@record(frozen=True)
class WaitObservation:
    """Where one thread waits, judged from its system call (``host.waits``).

    ``timed``: True for a wait that ends by itself (a timeout in the call or on the socket),
    False for one that can last forever, None when not a wait or not readable.
    """

    syscall: str  # name, "running", "none" or "syscall_<nr>"
    timed: bool | None = None
    timeout: float | None = None  # seconds; the time left for a deadline
    network: bool = False  # on a socket (its fd, or every fd of a poll set / epoll instance)
    peer: str | None = None  # "10.0.0.5:21" for a socket wait, when resolved
    child: int | None = None  # wait4/waitid on one pid
    on_children: bool = False  # wait4/waitid, or a poll on pipes whose other end a descendant holds
    fd: int | None = None  # the socket fd whose peer is named
    peer_key: str | None = None  # "pid:fd:inode", the key the resolved peer is saved under

    @property
    def timeout_seconds(self) -> float | None:
        """``blocked.timeoutSeconds``: -1 for no timeout, None when unknown or not a wait."""
        if self.timed is False:
            return -1.0
        return self.timeout if self.timed else None

    @property
    def untimed_network(self) -> bool:
        return self.network and self.timed is False


@record(frozen=True)
class ThreadObservation:
    """A thread of the worker other than the main one."""

    tid: int
    cpu_seconds: float
    voluntary: int
    state: str
    wait: WaitObservation | None = None


@record(frozen=True)
class DescendantObservation:
    """A process below the worker that no group matches: part of the worker's work."""

    pid: int
    start_ticks: int
    ppid: int
    depth: int
    cmdline: str  # sanitised, short
    state: str
    cpu_seconds: float  # its own threads plus its children reaped since
    voluntary: int  # its main thread's wakeups
    io_chars: int | None  # rchar + wchar (file and pipe bytes); None without access
    wait: WaitObservation | None = None

    @property
    def key(self) -> str:
        return f"p{self.pid}:{self.start_ticks}"


@record(frozen=True)
class WorkTree:
    """A worker's other threads and descendant processes, read when its main thread waits."""

    threads: tuple[ThreadObservation, ...] = ()
    descendants: tuple[DescendantObservation, ...] = ()


@record(frozen=True)
class ProcessObservation:
    """Progress counters of the process and of its main thread."""

    cpu_seconds: float  # whole process, user + system
    main_cpu_seconds: float  # main thread only: a background thread cannot fake progress
    main_voluntary: int  # main thread's voluntary context switches (its wakeups, psutil's word)
    main_involuntary: int
    state: str  # /proc state letter of the main thread: R, S, D, Z, T ...
    wchan: str | None = None
    syscall: str | None = None  # name, "running", or None when unreadable
    syscall_nr: int | None = None
    syscall_fd: int | None = None  # first argument when the syscall takes an fd
    threads: int = 1
    write_chars: int | None = None  # /proc/PID/io wchar: caps log bytes on shared files
    # Where the main thread waits, with its timeout: read (with the work tree below) only
    # when the main thread did not move since the previous run.
    main_wait: WaitObservation | None = None


@record(frozen=True)
class HorseObservation:
    """A child the worker waits for (an RQ work horse): judged as the worker's own work."""

    pid: int
    start_ticks: int
    create_time: float
    cmdline: str
    process: ProcessObservation
    peer: str | None = None  # socket peer of the call it is blocked in, when one

    @property
    def key(self) -> str:
        return f"{self.pid}:{self.start_ticks}"


@record(frozen=True)
class WorkerObservation:
    """Everything the host phase saw about one worker this run."""

    worker: Worker
    log: LogObservation | None = None
    heartbeat: HeartbeatObservation | None = None
    process: ProcessObservation | None = None
    peer: str | None = None  # socket peer of syscall_fd, resolved only when it looks blocked
    tree: WorkTree | None = None  # other threads and descendants, when the main thread waits
    # The other threads, when the main thread moved but the log was silent (``host.work``).
    watched: tuple[ThreadObservation, ...] | None = None
    notes: tuple[str, ...] = ()  # evidence problems worth showing in the reason
    heartbeat_unavailable: bool = False  # the group's heartbeat files could not be read
    horse: HorseObservation | None = None
    # How a pool process waits for work from its parent, e.g. "read on a pipe": set when
    # the parent holds the other end of the pipe its main thread reads.
    waits_for_parent: str | None = None


def _catalogued(sample: MetricSample) -> None:
    """Checked when a sample is read back from the saved state (``records.load``)."""
    spec = CATALOGUE.get(sample.name)
    if spec is None:
        raise ValueError(f"{sample.name!r} is not a catalogued metric")
    if not set(sample.attributes) <= set(spec.attributes):
        raise ValueError(f"{sample.name} does not carry {sorted(sample.attributes)}")


@record(frozen=True)
class MetricSample:
    """A ready metric from a queue-side probe: name from the catalogue, gauge value."""

    __checks__ = (_catalogued,)

    name: str
    value: float
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
