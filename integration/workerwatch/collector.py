"""One collection run: discover -> probe -> judge, with the state carried between runs.

This is the only module that wires the phases together; the data flows one way and the
result (``RunResult``) is all the emitters, the status table and the push client need.
The host phase runs in a child process (see ``hostphase``), the queue-side probes in a
thread with their own per-call timeouts; both end by the run's deadline.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from workerwatch import hostphase, log
from workerwatch.config import Config, Group
from workerwatch.discover import stat_fields
from workerwatch.observations import MetricSample
from workerwatch.procfs import ProcGone
from workerwatch.state import StateStore
from workerwatch.verdict import (
    GONE,
    GroupVerdict,
    WorkerVerdict,
    gone,
    judge_group,
    transition_event,
)


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


def process_start(pid: int) -> int | None:
    """Start time of ``pid`` in ticks since boot, or None when it is gone."""
    try:
        return stat_fields(pid)[2]
    except (ProcGone, OSError, ValueError, IndexError):
        return None


def stuck_steps(raw: Any) -> dict[str, dict[str, Any]]:
    """The remembered stuck steps whose probe child is still the same live process."""
    alive = {}
    for step, entry in (raw or {}).items() if isinstance(raw, dict) else ():
        if (
            isinstance(entry, dict)
            and isinstance(entry.get("pid"), int)
            and _is_number(entry.get("since"))
            and process_start(entry["pid"]) == entry.get("start")
        ):
            alive[step] = entry
    return alive


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class Collector:
    def __init__(self, config: Config, clock: Any = time.time) -> None:
        self.config = config
        self.clock = clock
        self.groups: dict[str, Group] = {g.name: g for g in config.groups}

    def collect(self, store: StateStore, now: float | None = None) -> RunResult:
        started = time.monotonic()
        now = self.clock() if now is None else now
        deadline = started + self.config.deadline
        data = store.load()
        errors: Counter[str] = Counter({"state": len(store.problems)})
        store.problems.clear()
        run_state = data["probes"].get("run", {})
        last_run = run_state.get("last") if isinstance(run_state, dict) else None
        interval = now - last_run if isinstance(last_run, int | float) and now > last_run else None
        memories: dict[str, Any] = data["workers"]
        names: dict[str, Any] = data["names"]

        backlog_box: dict[str, Any] = {}
        backlog_thread = None
        if self.config.swf is not None or self.config.sqs is not None:
            backlog_thread = threading.Thread(
                target=self._backlog,
                args=(data["probes"], now, deadline, backlog_box),
                name="workerwatch-backlog",
                daemon=True,
            )
        # Steps that hung in an earlier run and whose probe child is still stuck are not
        # tried again while it lives: one stuck child per hung step, not one per run.
        stuck = stuck_steps(data["probes"].get("stuck"))
        for step, entry in stuck.items():
            errors["heartbeat" if step.startswith("heartbeats:") else "process"] += 1
            since = time.strftime("%H:%M:%S", time.localtime(entry["since"]))
            log.error(
                f"skipped {step}: a probe from an earlier run is still stuck in it "
                f"(pid {entry['pid']}, since {since})"
            )
        # Fork the host phase before starting any thread: forking a threaded process
        # copies locks in whatever state other threads left them.
        host = hostphase.run(self.config, memories, names, now, deadline, before_wait=(
            backlog_thread.start if backlog_thread else None
        ), skip=frozenset(stuck))  # fmt: skip
        errors.update(host.errors)
        if host.crash:
            errors["host"] += 1
            log.error(f"host probes failed: {host.crash.strip().splitlines()[-1]}")
        elif not host.finished:
            errors["deadline"] += 1
            log.error(
                f"deadline {self.config.deadline:g} s reached while probing {host.current}; "
                f"{host.unprobed} worker(s) not probed this run"
            )
            # Only steps the child can skip are remembered; a hang in discovery itself is
            # bounded by the deadline each run.
            if host.child is not None and host.step != "discovery":
                started = process_start(host.child)
                if started is not None:
                    stuck[host.step] = {"pid": host.child, "start": started, "since": now}
        data["probes"]["stuck"] = stuck
        judged = hostphase.judge_all(host, self.config, memories, names, now)

        verdicts = [j.verdict for j in judged]
        events = [e for j in judged for e in j.events]
        new_memories = {j.key: j.memory for j in judged}
        for j in judged:
            names[j.verdict.name] = {"key": j.key, "pid": j.verdict.pid, "last_seen": now}
        live_keys = {w.key for w in host.workers}
        if host.discovered:
            live_names = {v.name for v in verdicts}
            verdicts.extend(self._gone(memories, new_memories, live_names, live_keys, now, events))
        for key, raw in memories.items():
            # Not judged this run (deadline): keep its history untouched.
            if key not in new_memories and (not host.discovered or key in live_keys):
                new_memories[key] = raw
        for name in list(names):
            seen = names[name].get("last_seen") if isinstance(names[name], dict) else None
            if not _is_number(seen) or now - seen > self.config.forget_after:
                del names[name]  # expired, or not something we wrote

        backlog, notes = self._backlog_result(backlog_thread, backlog_box, deadline, errors, data)
        running = Counter(w.group for w in host.workers)
        # Without a finished discovery a group's count would read as "all missing".
        groups = [
            judge_group(
                g.name,
                g.expected,
                [v for v in verdicts if v.group == g.name],
                notes.get(g.name),
                running=running.get(g.name, 0),
            )
            for g in self.config.groups
            if host.discovered
        ]
        data["workers"] = new_memories
        data["names"] = names
        data["probes"]["run"] = {"last": now}
        store.save(data)
        errors.update({"state": len(store.problems)})
        return RunResult(
            now=now,
            duration=time.monotonic() - started,
            interval_s=interval,
            workers=verdicts,
            groups=groups,
            backlog=backlog,
            errors=+errors,  # unary plus drops the zero counts
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

    def _backlog_result(
        self,
        thread: threading.Thread | None,
        box: dict[str, Any],
        deadline: float,
        errors: Counter[str],
        data: dict[str, Any],
    ) -> tuple[list[MetricSample], dict[str, str]]:
        if thread is None:
            return [], {}
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if "crash" in box:
            errors["backlog"] += 1
            log.error(f"backlog probes failed: {box['crash']}")
        elif thread.is_alive() or "outcome" not in box:
            errors["deadline"] += 1
            log.error(f"deadline {self.config.deadline:g} s reached in the backlog probes")
        else:
            outcome = box["outcome"]
            data["probes"].update(box["probes"])
            for probe, message in outcome.errors:
                errors[probe] += 1
                log.error(message)
            return outcome.metrics, outcome.group_notes
        return [], {}

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
            memory = hostphase.memory_from(raw)
            if memory is None or now - memory.last_seen > self.config.forget_after:
                continue
            if memory.group not in self.groups or memory.name in live_names:
                continue  # restarted under the same name, or its group left the config
            verdict, memory = gone(memory, now)
            if verdict.previous_state != GONE:
                events.append(transition_event(verdict, "disappeared"))
            kept[key] = asdict(memory)
            verdicts.append(verdict)
        return verdicts
