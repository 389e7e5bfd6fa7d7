"""The saved state: everything one run leaves for the next, each record defined once.

The agent starts the integration afresh every interval, so what spans runs (log offsets,
counters, "silent since", backlog clocks, hung probe steps) is written to the state file
(``workerwatch.state``) and read back here. That file is input like any other: a record
of the wrong type or with an impossible value (not finite, negative where it cannot be, a
time far from now) in any field is dropped when loading, and the drops are said in one
warning; a dropped worker record costs that worker's deltas for one run. The checks come
from these definitions (field types and the limits in their metadata, see ``records``),
so a field added here is checked without another edit.

Names: a cumulative counter keeps the name its probe gives it from observation to memory
(``main_voluntary``: the main thread's voluntary context switches, psutil's word); the
per-interval difference is named after its metric on the verdict (``wakeups``).
"""

# Fields are declared through small helpers that return dataclasses.field(...).

from __future__ import annotations

from dataclasses import field
from typing import Any

from workerwatch import records
from workerwatch.judge.states import STATES, UNKNOWN
from workerwatch.observations import MetricSample
from workerwatch.records import record

# 2: "voluntary" became "main_voluntary", probes.stuck became probes.hung (migrated on load).
# 3: the work tree (units, peers, untimed_peers, hb_seen); others_voluntary dropped.
# 4: when a unit entered its wait (units.*.entered), when the units were read (units_at).
FORMAT_VERSION = 4
# An operation a queue endpoint does not implement is asked again after this long.
UNSUPPORTED_RECHECK_S = 6 * 3600.0

TIME = {"time": True}  # a moment this program recorded: near the run's "now"
# A file's modification time (log files, heartbeat files) may lie anywhere a clock could set it.
FILE_TIME = {"time": True, "ahead": records.PAST}
COUNT = {"ge": 0, "le": 2**63}  # kernel counters are 64-bit
PID = {"ge": 1, "le": 1 << 22}  # pid_max's ceiling (PID_MAX_LIMIT)
NAME = {"min_length": 1, "max_length": 4096}


def _optional(meta: dict[str, Any]) -> Any:
    return field(default=None, metadata=meta)


MAX_UNITS = 64  # threads and descendants remembered per worker
MAX_PEERS = 16  # resolved socket peers and peers seen without a timeout, per worker


@record
class UnitMemory:
    """One thread or descendant of a worker: its counters and since when it waits where."""

    cpu: float = field(metadata=COUNT)
    voluntary: int = field(metadata=COUNT)
    io: int | None = _optional(COUNT)  # a descendant's rchar + wchar
    wait: str | None = _optional(NAME)  # syscall, with the peer of a socket wait
    since: float | None = _optional(TIME)  # when it was first seen in that wait, unwoken
    # The run that first saw it in that wait (woken or not), when the run before it read
    # the units too; None when unknown (judge/work.py ``judge_tree``).
    entered: float | None = _optional(TIME)


@record
class WorkerMemory:
    """What one run leaves for the next about one process (keyed by pid + start time)."""

    name: str = field(metadata=NAME)
    group: str = field(metadata=NAME)
    pid: int = field(metadata=PID)
    first_seen: float = field(metadata=TIME)
    last_seen: float = field(metadata=TIME)
    state: str = field(default=UNKNOWN, metadata={"one_of": STATES})
    log_pos: dict[int, int] | None = _optional({"keys": {"le": 2**31}, "each": COUNT})
    last_log_activity: float | None = _optional(TIME)
    log_mtime: float | None = _optional(FILE_TIME)
    hb_seq: int | None = _optional(COUNT)
    hb_time: float | None = _optional(FILE_TIME)
    cpu: float | None = _optional(COUNT)  # seconds, whole process
    main_cpu: float | None = _optional(COUNT)  # seconds, main thread
    main_voluntary: int | None = _optional(COUNT)
    write_chars: int | None = _optional(COUNT)
    last_progress: float | None = _optional(TIME)
    blocked_syscall: str | None = _optional(NAME)
    blocked_fd: int | None = _optional({"ge": 0, "le": 2**31})
    blocked_since: float | None = _optional(TIME)
    stalled_since: float | None = _optional(TIME)
    wake_runs: int = field(default=0, metadata={"ge": 0, "le": 2**31})
    # Which fds were this process's logs at the last scan of its fd table (fd -> path and
    # fd -> inode) and how many fds it had open then: while the count and each inode are
    # unchanged, the next run reads only those fds' fdinfo (host/log_offsets.py).
    log_paths: dict[int, str] | None = _optional({"keys": {"le": 2**31}, "each": NAME})
    log_inodes: dict[int, int] | None = _optional({"keys": {"le": 2**31}, "each": COUNT})
    open_fds: int | None = _optional({"ge": 0, "le": 2**31})
    # The process's systemd unit as its cgroup gave it ("" for none) and its start time in
    # clock ticks: discovery reads the cgroup again only for another (pid, start).
    cgroup_unit: str | None = _optional({"max_length": 4096})
    start_ticks: int | None = _optional(COUNT)
    # A pool process: its parent's key, so its end while the parent lives is a recycling.
    parent_key: str | None = _optional(NAME)
    # The work horse seen last run (pid:start ticks), its counters, and when it last moved.
    horse_key: str | None = _optional(NAME)
    horse_cpu: float | None = _optional(COUNT)
    horse_voluntary: int | None = _optional(COUNT)
    horse_progress: float | None = _optional(TIME)
    # When this integration saw the heartbeat change, on its own clock: the beat's own
    # time is the writer's clock, which may be hours off.
    hb_seen: float | None = _optional(TIME)
    # "t<tid>" for a thread, "p<pid>:<start ticks>" for a descendant.
    units: dict[str, UnitMemory] | None = field(
        default=None, metadata={"tolerant": True, "max_length": MAX_UNITS}
    )
    # When ``units`` were read: a unit's entry into a wait is known only between two reads.
    units_at: float | None = _optional(TIME)
    # "pid:fd:socket inode" -> peer: a connection's peer is resolved once (psutil, ~10 ms).
    peers: dict[str, str] | None = field(
        default=None, metadata={"tolerant": True, "max_length": MAX_PEERS, "each": NAME}
    )
    # Peers this worker has been seen waiting on without a timeout, oldest first.
    untimed_peers: list[str] | None = field(
        default=None, metadata={"tolerant": True, "max_length": MAX_PEERS, "each": NAME}
    )
    # The ``stalled_since`` of the stall whose evidence (stack) was captured or skipped
    # for good: one capture per stall, however many runs it lasts.
    evidence_for: float | None = _optional(TIME)


@record
class NameRecord:
    """Which process a stable worker name pointed at, to see a restart (same name, new pid)."""

    key: str = field(metadata=NAME)
    pid: int = field(metadata=PID)
    last_seen: float = field(metadata=TIME)


@record
class HungStep:
    """A host-probe step whose child process hung in an earlier run and may still be hung."""

    pid: int = field(metadata=PID)
    start: int = field(metadata=COUNT)  # the child's start time in ticks since boot
    since: float = field(metadata=TIME)


@record
class RunRecord:
    """When the last run happened (the interval for count metrics)."""

    last: float = field(metadata=TIME)  # when the previous run started


@record
class Level:
    """A backlog count and since when it has not gone down (backlogStuckSeconds)."""

    count: float = field(metadata={"ge": 0})
    since: float | None = field(metadata=TIME)
    seen: float = field(metadata=TIME)


@record
class ProbeState:
    """One queue-side probe's memory (``swf`` or ``sqs``).

    ``endpoint`` and ``config`` fingerprint the section it was made with: what is keyed to
    the endpoint is dropped when region or endpoint change, the last values when anything
    in the section does.
    """

    endpoint: str
    config: str
    levels: dict[str, Level] = field(default_factory=dict, metadata={"tolerant": True})
    urls: dict[str, str] = field(default_factory=dict, metadata={"tolerant": True})
    # operation -> until when it is not asked again
    unsupported: dict[str, float] = field(
        default_factory=dict,
        metadata={"tolerant": True, "each": {**TIME, "ahead": UNSUPPORTED_RECHECK_S + 86400}},
    )
    sampled_at: float | None = field(default=None, metadata={**TIME, "tolerant": True})
    values: list[MetricSample] = field(default_factory=list, metadata={"tolerant": True})
    units: list[str] = field(default_factory=list, metadata={"tolerant": True})


@record
class Probes:
    """What the probes remember: hung steps, the last run, queue-probe state."""

    run: RunRecord | None = field(default=None, metadata={"tolerant": True})
    hung: dict[str, HungStep] = field(default_factory=dict, metadata={"tolerant": True})
    swf: ProbeState | None = field(default=None, metadata={"tolerant": True})
    sqs: ProbeState | None = field(default=None, metadata={"tolerant": True})


@record
class SavedState:
    """The state file's content (without its ``version``)."""

    workers: dict[str, WorkerMemory] = field(default_factory=dict, metadata={"tolerant": True})
    names: dict[str, NameRecord] = field(default_factory=dict, metadata={"tolerant": True})
    probes: Probes = field(default_factory=Probes, metadata={"tolerant": True})


def _migrate(data: dict[str, Any], version: int) -> dict[str, Any]:
    """An older format's document in this format's names."""
    if version == 1:
        workers = data.get("workers")
        if isinstance(workers, dict):
            for entry in workers.values():
                if isinstance(entry, dict) and "voluntary" in entry:
                    entry["main_voluntary"] = entry.pop("voluntary")
        probes = data.get("probes")
        if isinstance(probes, dict) and "stuck" in probes:
            probes["hung"] = probes.pop("stuck")
    if version in (1, 2):
        # The other threads' summed wakeups gave way to the per-thread units.
        for entry in (data.get("workers") or {}).values():
            if isinstance(entry, dict):
                entry.pop("others_voluntary", None)
    return data


MIGRATES = (1, 2, 3)  # older versions read by ``from_json`` (3 -> 4 adds optional fields only)


def from_json(data: dict[str, Any], now: float) -> tuple[SavedState, list[str]]:
    """The state from a parsed state file, and what was dropped (one line per entry).

    ``data`` is a mapping whose ``version`` is ``FORMAT_VERSION`` or one of ``MIGRATES``.
    """
    version = data.get("version")
    body = {k: v for k, v in data.items() if k != "version"}
    if version != FORMAT_VERSION:
        body = _migrate(body, version)  # type: ignore[arg-type]
    try:
        return records.load(SavedState, body, now)
    except records.Invalid as exc:  # an unknown top-level key: not something we wrote
        return SavedState(), [str(exc)]


def to_json(state: SavedState) -> dict[str, Any]:
    """The state as JSON-shaped data, ready for ``json.dumps``: the one way it is written."""
    return {"version": FORMAT_VERSION, **records.dump(state, compact=True)}
