"""The product's promise as a computed fact: with the shipped defaults, hang -> incident <= 5 min.

Every number is read from what ships: the group's default ``stall_after`` (config model), the
agent's run interval (each sample in definitions/agent/, the group settings under its
``config:``), and the Worker stalled condition (definitions/alerts/stalled-workers.yml, default
parameters). The steps are the ones docs/alerts.md ("Hang to incident") lays out, each bound
taken at its worst; the alert steps are also checked against ``alerts simulate`` at every phase
of the run against the window.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
import yaml
from workerwatch.alerts.load import load_alerts
from workerwatch.alerts.models import Condition
from workerwatch.alerts.simulate import Point, simulate
from workerwatch.config import parse
from workerwatch.config.model import Group
from workerwatch.units import parse_duration

ROOT = Path(__file__).resolve().parents[1]
DEFINITIONS = ROOT / "definitions"
PROMISE = 300.0
# The run's own time (bounded by the sample's `deadline`, 20 s, typically under a second), the
# agent forwarding the payload and New Relic ingesting it: not a documented figure, an
# allowance the budget keeps room for.
INGEST = 30.0


def _stalled_condition() -> Condition:
    (doc,) = load_alerts(DEFINITIONS / "alerts", {})
    return next(c for c in doc.conditions if c.key == "worker-stalled")


def _samples() -> dict[str, tuple[float, list[float]]]:
    """sample file -> (run interval, effective stall_after of each group)."""
    found = {}
    for path in sorted((DEFINITIONS / "agent").glob("*.sample")):
        (entry,) = yaml.safe_load(path.read_text(encoding="utf-8"))["integrations"]
        exec_ = entry["exec"]
        if "--interval" in exec_:  # long-running: the process's own interval
            interval = parse_duration(exec_[exec_.index("--interval") + 1])
        else:
            interval = parse_duration(entry["interval"])
        config = parse(yaml.safe_dump(entry["config"]))
        found[path.name] = (interval, [g.stall_after for g in config.groups])
    return found


def verdict_bound(stall_after: float, interval: float) -> float:
    """Hang -> the first payload saying stalled, at worst.

    The run after the hang still sees the wakeups that came before it (up to one interval
    after the hang), so the "no progress since" clock starts there; the first run at least
    ``stall_after`` later reports stalled.
    """
    return interval + interval * math.ceil(stall_after / interval)


def alert_bound(c: Condition, interval: float) -> float:
    """The stalled payload -> the incident opens (data time), at worst."""
    s, term = c.signal, c.critical
    assert term is not None
    window = s.aggregation_window
    if s.aggregation_method == "EVENT_FLOW":
        # The window holding the point ends at most one window later; it is aggregated when
        # a point of the signal arrives at or past its end plus the delay: the run after that.
        aggregated = interval * math.ceil((window + (s.aggregation_delay or 0)) / interval)
    elif s.aggregation_method == "EVENT_TIMER":
        aggregated = window + (s.aggregation_timer or 0)
    else:  # CADENCE: the window's end plus the delay, on the wall clock
        aggregated = window + (s.aggregation_delay or 0)
    # "at least once" opens on the first breaching window; "for at least" needs the rest.
    more = 0 if term.occurrences == "AT_LEAST_ONCE" else term.duration - window
    return aggregated + more


def test_the_default_stall_after_is_what_the_groups_in_the_samples_use() -> None:
    default = next(f.default for f in dataclasses.fields(Group) if f.name == "stall_after")
    for name, (_, stall_afters) in _samples().items():
        assert stall_afters and set(stall_afters) == {default}, name


def test_worst_case_hang_to_incident_with_the_shipped_defaults_is_under_five_minutes() -> None:
    c = _stalled_condition()
    totals = {}
    for name, (interval, stall_afters) in _samples().items():
        for stall_after in stall_afters:
            verdict = verdict_bound(stall_after, interval)
            alert = alert_bound(c, interval)
            total = verdict + alert + INGEST
            print(
                f"{name}: interval {interval:g} s, stall_after {stall_after:g} s: verdict "
                f"<= {verdict:g} s, condition <= {alert:g} s, ingest {INGEST:g} s: "
                f"hang -> incident <= {total:g} s"
            )
            assert total <= PROMISE, (name, verdict, alert, total)
            totals[name] = total
    # The budget table in docs/alerts.md states these totals.
    text = (ROOT / "docs" / "alerts.md").read_text(encoding="utf-8")
    section = text.split("## Hang to incident", 1)[1].split("\n## ", 1)[0]
    for name, total in totals.items():
        assert re.search(rf"\*\*{total:g} s\*\*", section), (name, total)


@pytest.mark.parametrize("interval", [15.0, 30.0])
def test_the_condition_bound_holds_in_the_replay_at_every_phase(interval: float) -> None:
    """The alert part of the budget, checked against simulate for every offset in the window."""
    (doc,) = load_alerts(DEFINITIONS / "alerts", {})
    c = next(x for x in doc.conditions if x.key == "worker-stalled")
    bound = alert_bound(c, interval)
    t0 = 1_800_000_000.0  # a multiple of every window
    worst = 0.0
    for phase in range(0, int(c.signal.aggregation_window) + 1, 5):
        first = t0 + 600 + phase
        points = [
            Point(t, "workerwatch.worker.stalled", v, {"host.name": "h", "worker.name": "w"})
            for t, v in [(first - interval * k, 0.0) for k in range(20, 0, -1)]
            + [(first + interval * k, 1.0) for k in range(20)]
        ]
        (incident,) = [i for i in simulate([doc], points) if i.condition == c.name]
        worst = max(worst, incident.opened - first)
        assert incident.opened - first <= bound, (phase, incident.opened - first, bound)
    print(f"interval {interval:g} s: condition bound {bound:g} s, replay's worst {worst:g} s")
    assert worst > 0
