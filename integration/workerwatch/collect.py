"""One collection run: discover -> probe -> judge, with the state carried between runs.

This is the only module that wires probes to verdicts; the data flows one way and the
result (``RunResult``) is all the emitters, the status table and the push client need.
"""

from __future__ import annotations

import os
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

        found = discover(self.config.groups)
        for probe, message in found.problems:
            errors[probe] += 1
            log.error(message)
        heartbeats = self._heartbeats(now, errors)
        live_pids = {w.pid for w in found.workers}

        memories: dict[str, Any] = data["workers"]
        names: dict[str, Any] = data["names"]
        new_memories: dict[str, dict[str, Any]] = {}
        verdicts: list[WorkerVerdict] = []
        events: list[dict[str, Any]] = []
        deadline = started + self.config.deadline

        for index, worker in enumerate(found.workers):
            if time.monotonic() > deadline:
                skipped = len(found.workers) - index
                errors["deadline"] += 1
                log.error(f"deadline {self.config.deadline:.0f} s reached; {skipped} not probed")
                break
            hb = self._match_heartbeat(worker, heartbeats.get(worker.group, []))
            result = self._probe(worker, hb, errors)
            if result is None:
                continue  # exited while we looked: counted by its absence
            name = worker.unit or (hb.worker if hb and hb.worker else None)
            name = clean_text(name or f"{worker.group}:{worker.pid}")
            prev = _memory_from(memories.get(worker.key))
            if looks_blocked(result, prev):
                assert result.process is not None and result.process.syscall_fd is not None
                peer = peer_probe.resolve(worker.pid, result.process.syscall_fd)
                result = WorkerObservation(**{**result.__dict__, "peer": peer})
            verdict, memory = judge(result, name, prev, now, self.groups[worker.group].stall_after)
            verdict.started = worker.create_time
            previous = names.get(name) if isinstance(names.get(name), dict) else None
            if previous and previous.get("key") != worker.key and prev is None:
                verdict.restarted = True
                events.append(_event(verdict, "restarted", f"pid {previous.get('pid')} -> "))
            names[name] = {"key": worker.key, "pid": worker.pid, "last_seen": now}
            new_memories[worker.key] = asdict(memory)
            verdicts.append(verdict)
            if verdict.state == STALLED and verdict.previous_state != STALLED:
                events.append(_event(verdict, "stalled"))
            elif verdict.previous_state == STALLED and verdict.state != STALLED:
                events.append(_event(verdict, "recovered"))

        live_names = {v.name for v in verdicts}
        verdicts.extend(self._gone(memories, new_memories, live_names, now, events))
        for name in list(names):
            entry = names[name]
            if not isinstance(entry, dict) or now - float(entry.get("last_seen", 0)) > (
                self.config.forget_after
            ):
                del names[name]

        for group in self.config.groups:
            for hb in heartbeats.get(group.name, []):
                if hb.pid and hb.pid not in live_pids and not _pid_alive(hb.pid):
                    log.warn(
                        f"heartbeat {hb.path} names pid {hb.pid}, which is not running: "
                        "the worker died without cleaning up"
                    )

        backlog: list[MetricSample] = []
        notes: dict[str, str] = {}
        if self.config.swf is not None or self.config.sqs is not None:
            from workerwatch import backlog as backlog_module

            outcome = backlog_module.collect(self.config, data["probes"], now, deadline)
            backlog, notes = outcome.metrics, outcome.group_notes
            for probe, message in outcome.errors:
                errors[probe] += 1
                log.error(message)

        groups = [
            judge_group(
                g.name,
                g.expected,
                [v for v in verdicts if v.group == g.name],
                notes.get(g.name),
            )
            for g in self.config.groups
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
        now: float,
        events: list[dict[str, Any]],
    ) -> list[WorkerVerdict]:
        verdicts = []
        for key, raw in memories.items():
            if key in kept:
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
