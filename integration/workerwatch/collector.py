"""One collection run: discover -> probe -> judge, with the state carried between runs.

This is the only module that wires the phases together; the data flows one way and the
result (``RunResult``) is all the emitters, the status table and the push client need.
The host phase runs in a child process (``host.child``), the queue-side probes in a
thread with their own per-call timeouts (``queues.cadence``); both end by the run's
deadline. Judging (``judge.fleet``) happens here, in the parent.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from collections import Counter
from dataclasses import field
from typing import TYPE_CHECKING, Any

from workerwatch import log
from workerwatch.config import Config
from workerwatch.host import child
from workerwatch.host.procfs import start_ticks
from workerwatch.judge import fleet
from workerwatch.judge.events import add_evidence, transition_event
from workerwatch.judge.memory import HungStep, Probes, RunRecord, WorkerMemory
from workerwatch.judge.states import UNKNOWN, GroupVerdict, WorkerVerdict
from workerwatch.judge.verdict import judge_group
from workerwatch.observations import MetricSample
from workerwatch.records import record
from workerwatch.state import StateStore

if TYPE_CHECKING:
    import threading


@record
class RunResult:
    """What one collection produced, for the emitters, status and push."""

    now: float
    duration: float
    interval_s: float | None
    workers: list[WorkerVerdict]
    groups: list[GroupVerdict]
    backlog: list[MetricSample] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    events: list[dict[str, Any]] = field(default_factory=list)


def live_hung_steps(hung: dict[str, HungStep]) -> dict[str, HungStep]:
    """The remembered hung steps whose probe child is still the same live process."""
    return {step: h for step, h in hung.items() if start_ticks(h.pid) == h.start}


# Stack captures per run and the time one may take: py-spy attaches in well under a second
# (bench/RESULTS.md); what cannot be captured by the deadline is captured on the next run.
MAX_CAPTURES = 2
CAPTURE_TIMEOUT = 5.0
# Left for saving the state and emitting once the captures are done.
CAPTURE_RESERVE = 2.0


def capture_evidence(
    judged: list[fleet.JudgedWorker],
    memories: dict[str, WorkerMemory],
    events: list[dict[str, Any]],
    deadline: float,
) -> None:
    """The stack of each newly stalled worker, once per stall, onto its stalled event.

    Runs after judging (the judge stays pure) for workers whose verdict is stalled and whose
    current stall has no evidence yet (``WorkerMemory.evidence_for``). At most
    ``MAX_CAPTURES`` a run, each within ``CAPTURE_TIMEOUT`` and the run's deadline; a
    worker left over is captured on a later run, on an event of its own.
    """
    done = 0
    for j in judged:
        memory, verdict = j.memory, j.verdict
        if not verdict.stalled or memory.stalled_since is None:
            continue
        prev = memories.get(j.key)
        if prev is not None and prev.evidence_for == memory.stalled_since:
            memory.evidence_for = prev.evidence_for  # already captured for this stall
            continue
        event = next(
            (e for e in j.events if e["attributes"].get("workerwatch.transition") == "stalled"),
            None,
        )
        budget = min(CAPTURE_TIMEOUT, deadline - time.monotonic() - CAPTURE_RESERVE)
        if done >= MAX_CAPTURES or budget < 0.5:
            if event is not None:
                add_evidence(event, verdict, "none", [], skipped="deferred to the next run "
                             f"({MAX_CAPTURES} captures a run, within the deadline)")  # fmt: skip
            continue
        # Imported for a capture only: it brings subprocess, threading and selectors, a few
        # ms of every run otherwise.
        from workerwatch.host import stack

        found = stack.capture(verdict.pid, budget)
        done += 1
        if event is None:  # stalled in an earlier run whose capture was deferred
            event = transition_event(verdict, "evidence")
            events.append(event)
        add_evidence(
            event, verdict, found.source, found.stack, found.skipped, found.sockets, found.seconds
        )
        memory.evidence_for = memory.stalled_since


def without_history(verdict: WorkerVerdict, why: str) -> WorkerVerdict:
    """An ``unknown`` verdict for want of a previous run, with the reason there is none."""
    if verdict.state != UNKNOWN:
        return verdict
    return dataclasses.replace(
        verdict,
        reason=f"no saved state ({why}): cannot compare runs",
        summary="no saved state: cannot compare runs",
    )


class Collector:
    """Runs collections. ``resident``: for a process that collects again and again (``run``,
    ``push``, ``status --watch``), whose host-phase child is kept across cycles
    (``host.child.Resident``); ``close`` ends it."""

    def __init__(self, config: Config, clock: Any = time.time, resident: bool = False) -> None:
        self.config = config
        self.clock = clock
        self.resident = child.Resident() if resident else None
        if resident:
            # What a resident process has built by now (modules, the config, pydantic's
            # models) lives as long as it does: frozen, the cyclic collector stops walking
            # it at every full collection, which cost ~2 ms a cycle at 200 workers.
            gc.freeze()

    @property
    def host_child(self) -> int | None:
        """The kept host-phase child's pid, while there is one."""
        return self.resident.pid if self.resident is not None else None

    def close(self) -> None:
        if self.resident is not None:
            self.resident.close()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def collect(self, store: StateStore, now: float | None = None) -> RunResult:
        started = time.monotonic()
        now = self.clock() if now is None else now
        deadline = started + self.config.deadline
        state = store.load(now)
        errors: Counter[str] = Counter({"state": len(store.problems)})
        store.problems.clear()
        last_run = state.probes.run.last if state.probes.run is not None else None
        interval = now - last_run if last_run is not None and now > last_run else None
        memories = state.workers

        backlog_box: dict[str, Any] = {}
        backlog_thread = None
        if self.config.swf is not None or self.config.sqs is not None:
            import threading  # only with queue probes

            backlog_thread = threading.Thread(
                target=self._backlog,
                args=(state.probes, now, deadline, backlog_box),
                name="workerwatch-backlog",
                daemon=True,
            )
        # Steps that hung in an earlier run and whose probe child is still hung are not
        # tried again while it lives: one hung child per hung step, not one per run.
        hung = live_hung_steps(state.probes.hung)
        for step, entry in hung.items():
            errors["heartbeat" if step.startswith("heartbeats:") else "process"] += 1
            since = time.strftime("%H:%M:%S", time.localtime(entry.since))
            log.error(
                f"skipped {step}: a probe from an earlier run is still hung in it "
                f"(pid {entry.pid}, since {since})"
            )
        # Fork the host phase before starting any thread: forking a threaded process
        # copies locks in whatever state other threads left them.
        host = child.run(self.config, memories, now, deadline, before_wait=(
            backlog_thread.start if backlog_thread else None
        ), skip=frozenset(hung), resident=self.resident)  # fmt: skip
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
                ticks = start_ticks(host.child)
                if ticks is not None:
                    hung[host.step] = HungStep(pid=host.child, start=ticks, since=now)
        state.probes.hung = hung
        judged = fleet.judge_all(
            host.observed, host.heartbeats, self.config, memories, state.names, now
        )

        verdicts = [j.verdict for j in judged]
        if store.unusable is not None and state.probes.run is None:
            # No previous run to compare with, and none will be saved for the next: say so
            # rather than promise a verdict "from the next run" that never comes.
            verdicts = [
                without_history(j.verdict, store.unusable) if j.key not in memories else j.verdict
                for j in judged
            ]
        events = [e for j in judged for e in j.events]
        new_memories: dict[str, WorkerMemory] = {j.key: j.memory for j in judged}
        live_keys = {w.key for w in host.workers}
        if host.discovered:
            live_names = {v.name for v in verdicts}
            verdicts.extend(
                fleet.judge_gone(
                    memories, new_memories, live_names, live_keys, self.config, now, events
                )
            )
        for key, memory in memories.items():
            # Not judged this run (deadline): keep its history untouched.
            if key not in new_memories and (not host.discovered or key in live_keys):
                new_memories[key] = memory
        fleet.remember_names(state.names, judged, now, self.config.forget_after)
        capture_evidence(judged, memories, events, deadline)

        backlog, notes = self._backlog_result(
            backlog_thread, backlog_box, deadline, errors, state.probes
        )
        # Top-level workers are what a group runs (and is expected to); pool processes
        # are counted apart, work horses not at all (README "Pools and work horses").
        running = Counter(w.group for w in host.workers if w.parent is None)
        pools = Counter(w.group for w in host.workers if w.parent is not None)
        # Without a finished discovery a group's count would read as "all missing".
        groups = [
            judge_group(
                g.name,
                g.expected,
                [v for v in verdicts if v.group == g.name],
                notes.get(g.name),
                running=running.get(g.name, 0),
                pool_processes=pools.get(g.name, 0),
            )
            for g in self.config.groups
            if host.discovered
        ]
        state.workers = new_memories
        state.probes.run = RunRecord(last=now)
        store.save(state)
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

    def _backlog(self, probes: Probes, now: float, deadline: float, box: dict[str, Any]) -> None:
        import copy

        from workerwatch.queues import cadence

        # Works on a copy: an abandoned thread must not change the state while it is saved.
        mine = Probes(swf=copy.deepcopy(probes.swf), sqs=copy.deepcopy(probes.sqs))
        try:
            box["outcome"] = cadence.collect(self.config, mine, now, deadline)
            box["probes"] = mine
        except Exception as exc:  # one failing probe must not end the run
            box["crash"] = f"{type(exc).__name__}: {exc}"

    def _backlog_result(
        self,
        thread: threading.Thread | None,
        box: dict[str, Any],
        deadline: float,
        errors: Counter[str],
        probes: Probes,
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
            probes.swf, probes.sqs = box["probes"].swf, box["probes"].sqs
            for probe, message in outcome.errors:
                errors[probe] += 1
                log.error(message)
            return outcome.metrics, outcome.group_notes
        return [], {}
