"""`apply` is idempotent across every on/off transition of every condition and policy setting.

Each case edits the shipped definitions into a state A and a state B, then walks A -> B -> A
against the fake NerdGraph: after each apply, a second apply must send no mutation (nothing
left behind that the plan keeps showing), and the stored condition must read back as the
definition says.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from workerwatch.alerts.alert_plan import condition_state, live_condition_state
from workerwatch.alerts.cli import alerts_main, dashboards_main
from workerwatch.alerts.dashboard_plan import dashboard_input
from workerwatch.alerts.diff import diff
from workerwatch.alerts.load import load_alerts, load_dashboards

from tests.nerdgraph.fake import FakeNerdGraph

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "definitions" / "alerts" / "stalled-workers.yml"
KEY = "NRAK-TESTSECRET0123456789ABCDEFGHIJ"
ACCOUNT = 1234567

Edit = Callable[[dict[str, Any]], None]


def _condition(doc: dict[str, Any], key: str) -> dict[str, Any]:
    return next(c for c in doc["conditions"] if c["key"] == key)


def stalled(edit: Callable[[dict[str, Any]], None]) -> Edit:
    return lambda doc: edit(_condition(doc, "worker-stalled"))


def lost(edit: Callable[[dict[str, Any]], None]) -> Edit:
    return lambda doc: edit(_condition(doc, "integration-not-reporting"))


def _signal(c: dict[str, Any], **values: Any) -> None:
    c.setdefault("signal", {}).update(values)


def _no_los_with_ignore(c: dict[str, Any]) -> None:
    c["expiration"] = {
        "duration": "5m",
        "open_incident": True,
        "ignore_on_expected_termination": True,
    }


def _los_off(c: dict[str, Any]) -> None:
    c.pop("expiration")
    c["critical"] = {"operator": "below", "threshold": 0, "duration": "1m"}


# (name, edit to state A, edit to state B). A is the shipped definitions unless it says so.
CASES: list[tuple[str, Edit | None, Edit]] = [
    ("enabled", None, stalled(lambda c: c.update(enabled=False))),
    ("warning term", None, stalled(lambda c: c.update(warning=dict(c["critical"])))),
    (
        "critical term",
        None,
        lost(lambda c: c.update(critical={"operator": "below", "threshold": 0, "duration": "1m"})),
    ),
    ("occurrences", None, stalled(lambda c: c["critical"].update(occurrences="at_least_once"))),
    (
        "loss of signal on a thresholded condition",
        None,
        stalled(lambda c: c.update(expiration={"duration": "10m", "close_incidents": True})),
    ),
    ("close incidents on loss", None, lost(lambda c: c["expiration"].update(close_incidents=True))),
    (
        "ignore on expected termination",
        None,
        lost(lambda c: c["expiration"].update(ignore_on_expected_termination=True)),
    ),
    (
        "open incident on loss (off needs ignore off)",
        None,
        lost(
            lambda c: c.update(
                expiration={"duration": "5m", "open_incident": False, "close_incidents": True},
                critical={"operator": "below", "threshold": 0, "duration": "1m"},
            )
        ),
    ),
    # The defect of issue 14 (Why 6): loss of signal switched off while
    # ignoreOnExpectedTermination was on left it behind, so the plan never settled.
    (
        "loss of signal off while ignoring expected termination",
        lost(_no_los_with_ignore),
        lost(_los_off),
    ),
    (
        "static gap filling",
        None,
        stalled(lambda c: _signal(c, fill_option="static", fill_value=0)),
    ),
    ("last-value gap filling", None, stalled(lambda c: _signal(c, fill_option="last_value"))),
    ("sliding windows", None, stalled(lambda c: _signal(c, slide_by="15s"))),
    ("evaluation delay", None, stalled(lambda c: _signal(c, evaluation_delay="1m"))),
    (
        "event timer",
        None,
        stalled(lambda c: _signal(c, aggregation_method="event_timer", aggregation_delay=None)),
    ),
    ("cadence", None, stalled(lambda c: _signal(c, aggregation_method="cadence"))),
    ("incident time limit", None, stalled(lambda c: c.update(violation_time_limit="2h"))),
    (
        "incident preference",
        None,
        lambda doc: doc["policy"].update(incident_preference="PER_POLICY"),
    ),
    (
        "condition removed",
        None,
        lambda doc: doc.update(
            conditions=[c for c in doc["conditions"] if c["key"] != "sqs-backlog-stuck"]
        ),
    ),
]


def _write(base: dict[str, Any], edit: Edit | None, directory: Path) -> Path:
    doc = copy.deepcopy(base)
    if edit:
        edit(doc)
    alerts = directory / "alerts"
    alerts.mkdir(parents=True, exist_ok=True)
    (alerts / "policy.yml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return directory


@pytest.fixture
def fake(httpserver, monkeypatch: pytest.MonkeyPatch) -> FakeNerdGraph:
    server = FakeNerdGraph(KEY, ACCOUNT)
    httpserver.expect_request("/graphql", method="POST").respond_with_handler(server.handle)
    monkeypatch.setenv("NEW_RELIC_API_KEY", KEY)
    server.endpoint = httpserver.url_for("/graphql")  # type: ignore[attr-defined]
    yield server
    assert server.invalid == [], "a request did not validate against the NerdGraph schema"


def _apply(fake: FakeNerdGraph, definitions: Path, capsys: pytest.CaptureFixture[str]) -> str:
    argv = ["apply", "--account-id", str(ACCOUNT), "--endpoint", fake.endpoint]  # type: ignore[attr-defined]
    code = alerts_main([*argv, "--definitions", str(definitions)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    return out


def _assert_settled(fake: FakeNerdGraph, definitions: Path, capsys, label: str) -> None:
    before = len(fake.mutations)
    out = _apply(fake, definitions, capsys)
    assert len(fake.mutations) == before, f"{label}: a second apply still changes:\n{out}"
    # And what the account holds is what the definition says, field by field.
    (doc,) = load_alerts(definitions / "alerts", {})
    policy = fake.policy_named(doc.policy.name)
    assert policy["incidentPreference"] == doc.policy.incident_preference, label
    live = {c["name"]: c for c in fake.conditions_in(policy["id"])}
    assert sorted(live) == sorted(c.name for c in doc.conditions), label
    for c in doc.conditions:
        want = condition_state(c)
        assert diff(live_condition_state(live[c.name], want), want) == [], f"{label}: {c.name}"


@pytest.mark.parametrize(("name", "edit_a", "edit_b"), CASES, ids=[c[0] for c in CASES])
def test_every_transition_settles_in_one_apply(
    fake: FakeNerdGraph, tmp_path: Path, capsys, name: str, edit_a: Edit | None, edit_b: Edit
) -> None:
    base = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    state_a = _write(base, edit_a, tmp_path / "a")
    state_b = _write(base, edit_b, tmp_path / "b")
    for step, definitions in (("A", state_a), ("A -> B", state_b), ("B -> A", state_a)):
        _apply(fake, definitions, capsys)
        _assert_settled(fake, definitions, capsys, f"{name}, {step}")


# ----------------------------------------------------------------------------- dashboards

DASHBOARD = ROOT / "definitions" / "dashboards" / "nri-workerwatch.yml"


def _widget(doc: dict[str, Any], title: str) -> dict[str, Any]:
    return next(
        w for page in doc["dashboard"]["pages"] for w in page["widgets"] if w["title"] == title
    )


def _unfilter(doc: dict[str, Any]) -> None:
    # Variables removed, and every query that used them with them.
    doc["dashboard"].pop("variables")
    for page in doc["dashboard"]["pages"]:
        for w in page["widgets"]:
            if "query" in w:
                w["query"] = re.sub(
                    r"\s*(WHERE|AND) \$\{host_attribute\} IN \(\{\{host\}\}\) "
                    r"AND worker\.group IN \(\{\{group\}\}\)",
                    lambda m: " WHERE worker.group IS NOT NULL" if m.group(1) == "WHERE" else "",
                    w["query"],
                )


DASHBOARD_CASES: list[tuple[str, Edit]] = [
    ("billboard threshold", lambda d: _widget(d, "Stalled workers (all hosts)").pop("critical")),
    ("billboard warning", lambda d: _widget(d, "SWF workflows timed out").update(warning=1)),
    ("legend", lambda d: _widget(d, "CPU seconds").update(legend=False)),
    ("template variables", _unfilter),
    ("page description", lambda d: d["dashboard"]["pages"][1].pop("description")),
    (
        "widget removed",
        lambda d: d["dashboard"]["pages"][0]["widgets"].remove(_widget(d, "Running tasks")),
    ),
    ("permissions", lambda d: d["dashboard"].update(permissions="PRIVATE")),
]


def _write_dashboard(edit: Edit | None, directory: Path) -> Path:
    doc = yaml.safe_load(DASHBOARD.read_text(encoding="utf-8"))
    if edit:
        edit(doc)
    (directory / "dashboards").mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(doc, sort_keys=False)
    (directory / "dashboards" / "d.yml").write_text(text, encoding="utf-8")
    return directory


@pytest.mark.parametrize(("name", "edit"), DASHBOARD_CASES, ids=[c[0] for c in DASHBOARD_CASES])
def test_every_dashboard_transition_settles_in_one_apply(
    fake: FakeNerdGraph, tmp_path: Path, capsys, name: str, edit: Edit
) -> None:
    state_a = _write_dashboard(None, tmp_path / "a")
    state_b = _write_dashboard(edit, tmp_path / "b")
    argv = ["apply", "--account-id", str(ACCOUNT), "--endpoint", fake.endpoint]  # type: ignore[attr-defined]
    for step, definitions in (("A", state_a), ("A -> B", state_b), ("B -> A", state_a)):
        for attempt in ("apply", "second apply"):
            before = len(fake.mutations)
            assert dashboards_main([*argv, "--definitions", str(definitions)]) == 0
            out = capsys.readouterr().out
            if attempt == "second apply":
                assert len(fake.mutations) == before, f"{name}, {step}: still changes:\n{out}"
        (doc,) = load_dashboards(definitions / "dashboards", {})
        (stored,) = fake.dashboards.values()
        assert len(stored["variables"]) == len(doc.dashboard.variables), f"{name}, {step}"
        # What the account holds, read without the diff's projection: thresholds and legends
        # as the definition says, including their absence.
        sent = dashboard_input(doc.dashboard, ACCOUNT, {})
        for page_sent, page_stored in zip(sent["pages"], stored["pages"]):
            assert page_stored.get("description") == page_sent.get("description"), name
            assert len(page_stored["widgets"]) == len(page_sent["widgets"]), name
            for w_sent, w_stored in zip(page_sent["widgets"], page_stored["widgets"]):
                for key in ("thresholds", "legend", "nrqlQueries"):
                    have = w_stored["rawConfiguration"].get(key) or None
                    want = w_sent["rawConfiguration"].get(key) or None
                    assert have == want, f"{name}, {step}: {w_sent['title']} {key}"
