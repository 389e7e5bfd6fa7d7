"""One collection run: discover -> probe -> judge, with the state carried between runs.

This is the only module that wires probes to verdicts; the data flows one way and the
result (``RunResult``) is all the emitters, the status table and the push client need.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from workerwatch import log
from workerwatch.config import Config, Group
from workerwatch.discover import discover
from workerwatch.observations import (
    HeartbeatObservation,
    MetricSample,
    Worker,
    WorkerObservation,
)
from workerwatch.probes import heartbeat as heartbeat_probe
from workerwatch.probes import log as log_probe
from workerwatch.probes import peer as peer_probe
from workerwatch.probes import process as process_probe
from workerwatch.procfs import ProcGone
from workerwatch.sanitize import clean_text
from workerwatch.state import StateStore
from workerwatch.verdict import (
    GONE,
    STALLED,
    GroupVerdict,
    WorkerMemory,
    WorkerVerdict,
    gone,
    judge,
    judge_group,
    looks_blocked,
)

_MEMORY_FIELDS = {f.name for f in fields(WorkerMemory)}


@dataclass
class RunResult:
    now: float
    duration: float
    interval_s: float | None
    workers: list[WorkerVerdict]
    groups: list[GroupVerdict]
    backlog: list[MetricSample] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    events: list[dict[str, Any]] = field(default_factory=list)


def _memory_from(raw: Any) -> WorkerMemory | None:
    """Rebuild remembered state, or None if the entry is not something we wrote."""
    if not isinstance(raw, dict):
        return None
    try:
        memory = WorkerMemory(**{k: v for k, v in raw.items() if k in _MEMORY_FIELDS})
        if memory.log_pos is not None:
            memory.log_pos = {int(fd): int(pos) for fd, pos in memory.log_pos.items()}
        float(memory.first_seen), float(memory.last_seen)
    except (TypeError, ValueError, AttributeError):
        return None
    return memory


def _name_matches(name: str | None, unit: str | None, pid: int) -> bool:
    if not name:
        return False
    candidates = {str(pid)}
    if unit:
        candidates |= {unit, unit.removesuffix(".service")}
    return name in candidates


def _pid_alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


class Collector:
    def __init__(self, config: Config, clock: Any = time.time) -> None:
        self.config = config
        self.clock = clock
        self.groups: dict[str, Group] = {g.name: g for g in config.groups}

    def collect(self, store: StateStore, now: float | None = None) -> RunResult:
        started = time.monotonic()
        now = self.clock() if now is None else now
        data = store.load()
        errors: Counter[str] = Counter()
        errors["state"] += len(store.problems)
        store.problems.clear()
        run_state = data["probes"].get("run", {})
        last_run = run_state.get("last") if isinstance(run_state, dict) else None
        interval = now - last_run if isinstance(last_run, int | float) and now > last_run else None

        deadline = started + self.config.deadline
        memories: dict[str, Any] = data["workers"]
        names: dict[str, Any] = data["names"]
        host = _HostPhase(self, memories, names, now)
        phases = [threading.Thread(target=host.run, name="workerwatch-host", daemon=True)]
        backlog_box: dict[str, Any] = {}
        if self.config.swf is not None or self.config.sqs is not None:
            phases.append(
                threading.Thread(
                    target=self._backlog,
                    args=(data["probes"], now, deadline, backlog_box),
                    name="workerwatch-backlog",
                    daemon=True,
                )
            )
        for thread in phases:
            thread.start()
        for thread in phases:
            # A probe stuck in a hung file system or a D-state /proc read cannot be
            # interrupted; it is abandoned and the run reports what it has.
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        host_done = not phases[0].is_alive()
        snapshot = host.finish()
        errors.update(snapshot.errors)
        if not host_done:
            errors["deadline"] += 1
            log.error(
                f"deadline {self.config.deadline:g} s reached while probing {snapshot.current}; "
                f"{snapshot.unprobed} worker(s) not probed this run"
            )

        verdicts, events = snapshot.verdicts, snapshot.events
        new_memories = snapshot.memories
        if snapshot.discovered:
            live_names = {v.name for v in verdicts}
            verdicts.extend(
                self._gone(memories, new_memories, live_names, snapshot.live_keys, now, events)
            )
        for key, raw in memories.items():
            # Not judged this run (deadline): keep its history untouched.
            if key not in new_memories and (not snapshot.discovered or key in snapshot.live_keys):
                new_memories[key] = raw
        for name in list(names):
            entry = names[name]
            if not isinstance(entry, dict) or now - float(entry.get("last_seen", 0)) > (
                self.config.forget_after
            ):
                del names[name]

        backlog: list[MetricSample] = []
        notes: dict[str, str] = {}
        if len(phases) > 1:
            if "crash" in backlog_box:
                errors["backlog"] += 1
                log.error(f"backlog probes failed: {backlog_box['crash']}")
            elif phases[1].is_alive() or "outcome" not in backlog_box:
                errors["deadline"] += 1
                log.error(f"deadline {self.config.deadline:g} s reached in the backlog probes")
            else:
                outcome = backlog_box["outcome"]
                data["probes"].update(backlog_box["probes"])
                backlog, notes = outcome.metrics, outcome.group_notes
                for probe, message in outcome.errors:
                    errors[probe] += 1
                    log.error(message)

        # Without a finished discovery a group's count would read as "all missing".
        groups = [
            judge_group(
                g.name,
                g.expected,
                [v for v in verdicts if v.group == g.name],
                notes.get(g.name),
                running=snapshot.running.get(g.name, 0),
            )
            for g in self.config.groups
            if snapshot.discovered
        ]
        data["workers"] = new_memories
        data["names"] = names
        data["probes"]["run"] = {"last": now}
        store.save(data)
        errors["state"] += len(store.problems)
        return RunResult(
            now=now,
            duration=time.monotonic() - started,
            interval_s=interval,
            workers=verdicts,
            groups=groups,
            backlog=backlog,
            errors=errors,
            events=events,
        )

    def _backlog(
        self, probes: dict[str, Any], now: float, deadline: float, box: dict[str, Any]
    ) -> None:
        from workerwatch import backlog as backlog_module

        # Works on a copy: an abandoned thread must not change the state while it is saved.
        mine = copy.deepcopy({k: v for k, v in probes.items() if k != "run"})
        try:
            box["outcome"] = backlog_module.collect(self.config, mine, now, deadline)
            box["probes"] = mine
        except Exception as exc:  # one failing probe must not end the run
            box["crash"] = f"{type(exc).__name__}: {exc}"

    def _heartbeats(
        self, now: float, errors: Counter[str]
    ) -> dict[str, list[HeartbeatObservation]]:
        found: dict[str, list[HeartbeatObservation]] = {}
        for group in self.config.groups:
            if not group.heartbeats:
                continue
            try:
                beats, problems = heartbeat_probe.observe(group.heartbeats, now)
            except OSError as exc:
                errors["heartbeat"] += 1
                log.error(f"heartbeats {group.heartbeats}: {exc}")
                continue
            for problem in problems:
                errors["heartbeat"] += 1
                log.warn(problem)
            found[group.name] = beats
        return found

    @staticmethod
    def _match_heartbeat(
        worker: Worker, beats: list[HeartbeatObservation]
    ) -> HeartbeatObservation | None:
        for hb in beats:
            if hb.pid == worker.pid:
                return hb
        for hb in beats:
            if hb.pid is None and _name_matches(hb.worker, worker.unit, worker.pid):
                return hb
            # A plain (or unparseable) file names its worker by its file name.
            plain = hb.pid is None and hb.worker is None
            if plain and _name_matches(heartbeat_probe.stem(hb.path), worker.unit, worker.pid):
                return hb
        return None

    def _probe(
        self, worker: Worker, hb: HeartbeatObservation | None, errors: Counter[str]
    ) -> WorkerObservation | None:
        group = self.groups[worker.group]
        notes: list[str] = []
        try:
            proc = process_probe.observe(worker.pid)
        except ProcGone:
            return None
        except (OSError, ValueError, IndexError) as exc:
            errors["process"] += 1
            log.error(f"process probe for pid {worker.pid}: {exc}")
            proc = None
        try:
            logs = log_probe.observe(worker.pid, group.logs)
        except ProcGone:
            return None
        except (OSError, ValueError) as exc:
            errors["log"] += 1
            log.error(f"log probe for pid {worker.pid}: {exc}")
            logs = None
        if logs is not None and logs.source != "fd" and group.logs:
            notes.append("fd table unreadable")
        return WorkerObservation(
            worker=worker, log=logs, heartbeat=hb, process=proc, notes=tuple(notes)
        )

    def _gone(
        self,
        memories: dict[str, Any],
        kept: dict[str, dict[str, Any]],
        live_names: set[str],
        live_keys: set[str],
        now: float,
        events: list[dict[str, Any]],
    ) -> list[WorkerVerdict]:
        verdicts = []
        for key, raw in memories.items():
            if key in kept or key in live_keys:
                continue
            memory = _memory_from(raw)
            if memory is None or now - memory.last_seen > self.config.forget_after:
                continue
            if memory.group not in self.groups or memory.name in live_names:
                continue  # restarted under the same name, or its group left the config
            verdict, memory = gone(memory, now)
            if verdict.previous_state != GONE:
                events.append(_event(verdict, "disappeared"))
            kept[key] = asdict(memory)
            verdicts.append(verdict)
        return verdicts


def _event(verdict: WorkerVerdict, what: str, detail: str = "") -> dict[str, Any]:
    if what == "restarted":
        detail = f"{detail}{verdict.pid}"
    summary = f"{verdict.name} {what}: {detail or verdict.reason}"
    return {
        "summary": clean_text(summary, 4000),
        "category": "workerwatch",
        "attributes": {
            "worker.name": verdict.name,
            "worker.group": verdict.group,
            "process.pid": verdict.pid,
            "worker.state": verdict.state,
            "worker.previousState": verdict.previous_state or "none",
            "worker.reason": clean_text(verdict.reason, 4000),
            "workerwatch.transition": what,
        },
    }


@dataclass
class _HostSnapshot:
    discovered: bool
    verdicts: list[WorkerVerdict]
    memories: dict[str, dict[str, Any]]
    events: list[dict[str, Any]]
    errors: Counter[str]
    running: dict[str, int]
    live_keys: set[str]
    current: str
    unprobed: int


class _HostPhase:
    """Discovery and the per-worker probes, run in a thread the run can walk away from.

    Everything it produces goes through ``_add`` under a lock; once the run has taken its
    snapshot, a late result from a thread that was stuck is dropped, never half-applied.
    """

    def __init__(
        self, collector: Collector, memories: dict[str, Any], names: dict[str, Any], now: float
    ) -> None:
        self.collector = collector
        self.memories = memories
        self.names = names
        self.now = now
        self.lock = threading.Lock()
        self.abandoned = False
        self.discovered = False
        self.current = "discovery"
        self.workers: list[Worker] = []
        self.done = 0
        self.verdicts: list[WorkerVerdict] = []
        self.new_memories: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.errors: Counter[str] = Counter()
        self.name_updates: dict[str, dict[str, Any]] = {}

    def _step(self, what: str) -> bool:
        with self.lock:
            self.current = what
            return not self.abandoned

    def run(self) -> None:
        collector, now = self.collector, self.now
        errors: Counter[str] = Counter()
        found = discover(collector.config.groups)
        for probe, message in found.problems:
            errors[probe] += 1
            log.error(message)
        if not self._step("heartbeat files"):
            return
        heartbeats = collector._heartbeats(now, errors)
        with self.lock:
            if self.abandoned:
                return
            self.workers = found.workers
            self.discovered = True
            self.errors.update(errors)
        live_pids = {w.pid for w in found.workers}
        for worker in found.workers:
            if not self._step(f"pid {worker.pid} ({worker.group})"):
                return
            self._one(worker, heartbeats.get(worker.group, []))
        self._step("heartbeat cleanup check")
        for beats in heartbeats.values():
            for hb in beats:
                if hb.pid and hb.pid not in live_pids and not _pid_alive(hb.pid):
                    log.warn(
                        f"heartbeat {hb.path} names pid {hb.pid}, which is not running: "
                        "the worker died without cleaning up"
                    )
        self._step("done")

    def _one(self, worker: Worker, beats: list[HeartbeatObservation]) -> None:
        collector, now = self.collector, self.now
        errors: Counter[str] = Counter()
        hb = collector._match_heartbeat(worker, beats)
        result = collector._probe(worker, hb, errors)
        if result is None:
            with self.lock:
                self.done += 1
                self.errors.update(errors)
            return  # exited while we looked: counted by its absence
        name = worker.unit or (hb.worker if hb and hb.worker else None)
        name = clean_text(name or f"{worker.group}:{worker.pid}")
        prev = _memory_from(self.memories.get(worker.key))
        if looks_blocked(result, prev):
            assert result.process is not None and result.process.syscall_fd is not None
            peer = peer_probe.resolve(worker.pid, result.process.syscall_fd)
            result = WorkerObservation(**{**result.__dict__, "peer": peer})
        stall_after = collector.groups[worker.group].stall_after
        verdict, memory = judge(result, name, prev, now, stall_after)
        verdict.started = worker.create_time
        events = []
        previous = self.names.get(name) if isinstance(self.names.get(name), dict) else None
        if previous and previous.get("key") != worker.key and prev is None:
            verdict.restarted = True
            events.append(_event(verdict, "restarted", f"pid {previous.get('pid')} -> "))
        if verdict.state == STALLED and verdict.previous_state != STALLED:
            events.append(_event(verdict, "stalled"))
        elif verdict.previous_state == STALLED and verdict.state != STALLED:
            events.append(_event(verdict, "recovered"))
        with self.lock:
            if self.abandoned:
                return
            self.done += 1
            self.errors.update(errors)
            self.name_updates[name] = {"key": worker.key, "pid": worker.pid, "last_seen": now}
            self.new_memories[worker.key] = asdict(memory)
            self.verdicts.append(verdict)
            self.events.extend(events)

    def finish(self) -> _HostSnapshot:
        """Stop accepting results and hand over what was gathered."""
        with self.lock:
            self.abandoned = True
            self.names.update(self.name_updates)
            running: Counter[str] = Counter(w.group for w in self.workers)
            return _HostSnapshot(
                discovered=self.discovered,
                verdicts=list(self.verdicts),
                memories=dict(self.new_memories),
                events=list(self.events),
                errors=Counter(self.errors),
                running=dict(running),
                live_keys={w.key for w in self.workers},
                current=self.current,
                unprobed=max(0, len(self.workers) - self.done),
            )
