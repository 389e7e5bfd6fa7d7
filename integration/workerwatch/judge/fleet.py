"""Judging one run's workers: names, heartbeats, verdicts, events, and the ones that left.

Runs in the parent, on what the host probes streamed back: each observed process is named,
given its group's heartbeat, judged against its memory (``verdict.judge``), and its change
of state becomes events; workers remembered but no longer running are judged ``gone``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from workerwatch.config import Config, Group
from workerwatch.judge.events import transition_event, transitions
from workerwatch.judge.memory import NameRecord, WorkerMemory
from workerwatch.judge.naming import match_heartbeat, worker_name
from workerwatch.judge.states import GONE, WorkerVerdict
from workerwatch.judge.supervision import supervise
from workerwatch.judge.verdict import gone, judge
from workerwatch.observations import (
    HeartbeatObservation,
    LogObservation,
    Worker,
    WorkerObservation,
)


class JudgedWorker:
    """One worker's verdict with what is remembered for the next run (a plain class: no
    dataclass created at start-up for an internal tuple)."""

    __slots__ = ("events", "key", "memory", "verdict")

    def __init__(
        self, verdict: WorkerVerdict, memory: WorkerMemory, key: str, events: list[dict[str, Any]]
    ) -> None:
        self.verdict = verdict
        self.memory = memory
        self.key = key
        self.events = events


def remember_log_fds(memory: WorkerMemory, log: LogObservation | None) -> None:
    """Keep the log fds found this run, so the next run can skip the fd table scan."""
    if log is None or log.source != "fd" or log.open_fds is None:
        return
    if any(f.inode is None for f in log.fds):
        return  # a kernel without ino: in fdinfo: nothing to confirm the files with
    memory.log_paths = {f.fd: f.path for f in log.fds}
    memory.log_inodes = {f.fd: f.inode for f in log.fds if f.inode is not None}
    memory.open_fds = log.open_fds


def remember_unit(memory: WorkerMemory, worker: Worker) -> None:
    """The unit as the cgroup gave it, for discovery's next run (host/discover.py)."""
    if worker.start_ticks is None:
        return
    unit = worker.unit or ""
    suffix = f"/{worker.pid}"
    if unit.endswith(suffix):  # discovery's mark of a unit shared by several workers
        unit = unit[: -len(suffix)]
    memory.cgroup_unit = unit
    memory.start_ticks = worker.start_ticks


def judge_worker(
    observation: WorkerObservation,
    group: Group,
    memories: dict[str, WorkerMemory],
    names: dict[str, NameRecord],
    now: float,
    parent_state: str | None = None,
) -> JudgedWorker:
    """The verdict for one observed worker, with its memory and transition events.

    ``parent_state`` is this run's verdict of a pool process's parent (``judge.supervision``).
    """
    worker = observation.worker
    name = worker_name(worker, observation.heartbeat)
    prev = memories.get(worker.key)
    verdict, memory = judge(observation, name, prev, now, group.stall_after)
    remember_log_fds(memory, observation.log)
    remember_unit(memory, worker)
    supervise(verdict, memory, observation, prev, now, group.stall_after, parent_state)
    verdict.started = worker.create_time
    events = []
    previous = names.get(name)
    if previous is not None and previous.key != worker.key and prev is None:
        verdict.restarted = True
        events.append(transition_event(verdict, "restarted", f"pid {previous.pid} -> "))
    events.extend(transitions(verdict))
    return JudgedWorker(verdict, memory, worker.key, events)


def judge_all(
    observed: list[WorkerObservation],
    heartbeats: dict[str, list[HeartbeatObservation]],
    config: Config,
    memories: dict[str, WorkerMemory],
    names: dict[str, NameRecord],
    now: float,
) -> list[JudgedWorker]:
    """Judge every observed worker with its group's heartbeats (when they could be read).

    Top-level workers first: a pool process's verdict depends on its parent's.
    """
    groups = {g.name: g for g in config.groups}
    judged = []
    states: dict[int, str] = {}
    for observation in sorted(observed, key=lambda o: o.worker.parent is not None):
        group = groups[observation.worker.group]
        if group.heartbeats and group.name not in heartbeats:
            # Not read this run (a hung mount, the deadline): the last known beat stands.
            observation = replace(observation, heartbeat_unavailable=True)
        elif group.heartbeats:
            hb = match_heartbeat(observation.worker, heartbeats[group.name])
            observation = replace(observation, heartbeat=hb)
        parent = observation.worker.parent
        parent_state = states.get(parent) if parent is not None else None
        j = judge_worker(observation, group, memories, names, now, parent_state)
        states[observation.worker.pid] = j.verdict.state
        judged.append(j)
    return judged


def judge_gone(
    memories: dict[str, WorkerMemory],
    kept: dict[str, WorkerMemory],
    live_names: set[str],
    live_keys: set[str],
    config: Config,
    now: float,
    events: list[dict[str, Any]],
) -> list[WorkerVerdict]:
    """Workers remembered but no longer running: ``gone`` until ``forget_after``.

    Their memory goes into ``kept``; ``disappeared`` events into ``events``. A pool process
    whose parent still runs was replaced by it (recycling): forgotten at once, no event.
    """
    groups = {g.name for g in config.groups}
    verdicts = []
    for key, memory in memories.items():
        if key in kept or key in live_keys:
            continue
        if now - memory.last_seen > config.forget_after:
            continue
        if memory.parent_key is not None and memory.parent_key in live_keys:
            continue
        if memory.group not in groups or memory.name in live_names:
            continue  # restarted under the same name, or its group left the config
        verdict, memory = gone(memory, now)
        if verdict.previous_state != GONE:
            events.append(transition_event(verdict, "disappeared"))
        kept[key] = memory
        verdicts.append(verdict)
    return verdicts


def remember_names(
    names: dict[str, NameRecord], judged: list[JudgedWorker], now: float, forget_after: float
) -> None:
    """Point each name at its process now, and forget names unseen for ``forget_after``."""
    for j in judged:
        names[j.verdict.name] = NameRecord(key=j.key, pid=j.verdict.pid, last_seen=now)
    for name in list(names):
        if now - names[name].last_seen > forget_after:
            del names[name]
