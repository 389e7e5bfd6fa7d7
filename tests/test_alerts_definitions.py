"""The alert and dashboard definitions: metric names, coverage, parameters, clear errors."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from workerwatch.alerts import MANAGED_MARKER, is_managed
from workerwatch.alerts import cli as cli_module
from workerwatch.alerts.cli import alerts_main, find_definitions
from workerwatch.alerts.fields import METRIC_NAME, metric_names
from workerwatch.alerts.load import load_alerts, load_dashboards
from workerwatch.alerts.models import AlertsDocument
from workerwatch.alerts.params import DefinitionError, parse_sets

ROOT = Path(__file__).resolve().parents[1]
DEFINITIONS = ROOT / "definitions"
RUNBOOK = ROOT / "docs" / "RUNBOOK.md"


def catalogued_metrics() -> set[str]:
    data = yaml.safe_load((DEFINITIONS / "metrics.yml").read_text(encoding="utf-8"))
    return {m["name"] for m in data["metrics"]}


def all_nrql() -> list[tuple[str, str]]:
    """(where, NRQL) for every query in definitions/, after parameter substitution."""
    found = []
    for doc in load_alerts(DEFINITIONS / "alerts", {}):
        found += [(f"{doc.source}: {c.key}", c.nrql) for c in doc.conditions]
    for doc in load_dashboards(DEFINITIONS / "dashboards", {}):
        for page in doc.dashboard.pages:
            found += [(f"{page.name}: {w.title}", w.query) for w in page.widgets if w.query]
    return found


@pytest.fixture(scope="module")
def policy() -> AlertsDocument:
    (doc,) = load_alerts(DEFINITIONS / "alerts", {})
    return doc


# ----------------------------------------------------------------------------- metric names


def test_every_nrql_query_references_only_catalogued_metrics() -> None:
    known = catalogued_metrics()
    queries = all_nrql()
    assert len(queries) > 20
    for where, nrql in queries:
        names = metric_names(nrql)
        assert names, f"{where}: queries no workerwatch metric"
        assert names <= known, f"{where}: not in metrics.yml: {sorted(names - known)}"


def test_raw_definition_files_mention_only_catalogued_metrics() -> None:
    # Catches names in comments, descriptions and widgets that a loader bug might skip.
    known = catalogued_metrics()
    for path in sorted((DEFINITIONS / "alerts").glob("*.yml")) + sorted(
        (DEFINITIONS / "dashboards").glob("*.yml")
    ):
        for match in METRIC_NAME.findall(path.read_text(encoding="utf-8")):
            assert match.rstrip(".") in known, f"{path.name}: {match}"


def test_metric_name_extraction() -> None:
    nrql = "SELECT max(workerwatch.worker.stalled) FROM Metric WHERE x = 'workerwatch.group.up.'"
    assert metric_names(nrql) == {"workerwatch.worker.stalled", "workerwatch.group.up"}


def test_an_unknown_metric_is_rejected_with_the_file_and_condition(tmp_path: Path) -> None:
    text = (DEFINITIONS / "alerts" / "stalled-workers.yml").read_text(encoding="utf-8")
    (tmp_path / "p.yml").write_text(
        text.replace("workerwatch.worker.stalled", "workerwatch.worker.stuck"), encoding="utf-8"
    )
    with pytest.raises(DefinitionError) as info:
        load_alerts(tmp_path, {})
    message = str(info.value)
    assert "p.yml" in message and "(worker-stalled).nrql" in message
    assert "workerwatch.worker.stuck" in message


# ----------------------------------------------------------------------------- coverage


def _condition_using(doc: AlertsDocument, metric: str):
    matches = [c for c in doc.conditions if metric in metric_names(c.nrql)]
    assert matches, f"no condition queries {metric}"
    return matches[0]


def test_policy_defaults(policy: AlertsDocument) -> None:
    assert policy.policy.name == "nri-workerwatch: stalled workers"
    assert (
        load_alerts(DEFINITIONS / "alerts", {"policy_name": "workers (prod)"})[0].policy.name
        == "workers (prod)"
    )


def test_stalled_worker_is_critical_per_host_and_worker(policy: AlertsDocument) -> None:
    stalled = _condition_using(policy, "workerwatch.worker.stalled")
    assert stalled.critical is not None and stalled.warning is None
    facet = stalled.nrql.split("FACET", 1)[1]
    assert "worker.name" in facet and policy.values["host_attribute"] in facet


def test_every_required_condition_exists(policy: AlertsDocument) -> None:
    missing = _condition_using(policy, "workerwatch.group.missing")
    assert missing.critical is not None
    for metric in (
        "workerwatch.worker.heartbeat.ageSeconds",
        "workerwatch.worker.log.silentSeconds",
    ):
        silent = _condition_using(policy, metric)
        assert silent.warning is not None and silent.critical is None
    for metric in (
        "workerwatch.swf.backlogStuckSeconds",
        "workerwatch.swf.timedOutWorkflows",
        "workerwatch.swf.canary.secondsSinceCompleted",
        "workerwatch.sqs.backlogStuckSeconds",
    ):
        assert _condition_using(policy, metric).critical is not None


def test_integration_silence_opens_a_loss_of_signal_incident(policy: AlertsDocument) -> None:
    los = _condition_using(policy, "workerwatch.integration.durationSeconds")
    assert los.expiration is not None
    assert los.expiration.open_incident is True
    assert 30 <= los.expiration.duration <= 172_800
    assert "FACET" in los.nrql  # one signal per host


def test_every_condition_has_a_description_and_a_runbook_section(policy: AlertsDocument) -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
        for line in RUNBOOK.read_text(encoding="utf-8").splitlines()
        if line.startswith("## ")
    }
    base = policy.values["runbook_base_url"]
    for c in policy.conditions:
        assert len(c.description) > 40, c.key
        assert is_managed(c.full_description)
        assert c.runbook_url == f"{base}#{c.key}"
        assert c.key in anchors, f"docs/RUNBOOK.md has no '## ' section for {c.key}"


# What docs/alerts.md promises for every shipped condition: its name there, the term's
# priority and operator, then the threshold and the duration, each either a number or the
# parameter whose documented default it takes (a `*_minutes` parameter counts minutes).
# ABOVE is strictly greater: with `max(workerwatch.worker.stalled)`, a 0/1 gauge, ABOVE 0
# holds for a stalled worker only, where ABOVE_OR_EQUALS 0 would hold for every healthy one.
# BELOW is strictly less: with `min(workerwatch.worker.up)`, 1 while the process runs and 0
# while a known worker is gone, BELOW 1 holds for a gone worker only.
# ALL: the value must hold for the whole duration ("for at least N minutes"), not once.
# (docs.newrelic.com/docs/alerts/create-alert/set-thresholds/set-thresholds-alert-condition;
# operators and occurrences: the NerdGraph AlertsNrqlConditionTermsInput enums.)
# Worker stalled opens on one stalled report: the integration already waited stall_after
# (docs/alerts.md, "Hang to incident": "`above 0` `at least once in` 1 minute").
PROMISED_OCCURRENCES = {
    "worker-waits-without-a-timeout": "AT_LEAST_ONCE",
    "worker-stalled": "AT_LEAST_ONCE",
}
PROMISED_TERMS = {
    "worker-stalled": ("Worker stalled", "critical", "ABOVE", 0, "stall_minutes"),
    "workers-missing": ("Workers missing", "critical", "ABOVE", 0, "missing_minutes"),
    "worker-gone": ("Worker gone", "critical", "BELOW", 1, "gone_minutes"),
    "worker-heartbeat-silent": (
        "Worker heartbeat silent",
        "warning",
        "ABOVE",
        "heartbeat_silent_minutes",
        "confirm_minutes",
    ),
    "worker-log-silent": (
        "Worker log silent",
        "warning",
        "ABOVE",
        "log_silent_minutes",
        "confirm_minutes",
    ),
    "worker-waits-without-a-timeout": (
        "Worker waits without a timeout",
        "warning",
        "ABOVE",
        0,
        "confirm_minutes",
    ),
    "swf-backlog-stuck": (
        "SWF backlog stuck",
        "critical",
        "ABOVE",
        "swf_backlog_stuck_minutes",
        "confirm_minutes",
    ),
    "swf-workflows-timing-out": (
        "SWF workflows timing out",
        "critical",
        "ABOVE",
        "swf_timed_out_workflows",
        "confirm_minutes",
    ),
    "swf-canary-late": (
        "SWF canary late",
        "critical",
        "ABOVE",
        "canary_late_minutes",
        "confirm_minutes",
    ),
    "sqs-backlog-stuck": (
        "SQS backlog stuck",
        "critical",
        "ABOVE",
        "sqs_backlog_stuck_minutes",
        "confirm_minutes",
    ),
}
# The one condition without a threshold: loss of signal per host.
PROMISED_LOSS_OF_SIGNAL = {"integration-not-reporting": "Integration not reporting"}
# Loss-of-signal settings: (expiration duration, open_incident, close_incidents,
# ignore_on_expected_termination); every other condition has none.
# Integration not reporting "opens an incident" and does not honour `termination: expected`
# ("`ignore_on_expected_termination` is off", docs/alerts.md). Worker gone closes "by loss of
# signal once the integration forgets the worker" (docs/alerts.md), opening none, after
# `gone_forgotten_minutes` (docs/RUNBOOK.md "Worker gone").
PROMISED_EXPIRATION = {
    "integration-not-reporting": ("integration_silent_minutes", True, False, False),
    "worker-gone": ("gone_forgotten_minutes", False, True, False),
}


def documented_defaults() -> dict[str, str]:
    """The parameter table of docs/alerts.md: name -> the default it documents."""
    rows = re.findall(
        r"^\| `(\w+)` \| `([^`]*)` \|", (ROOT / "docs" / "alerts.md").read_text(), re.M
    )
    return dict(rows)


def _documented(value: int | str, defaults: dict[str, str]) -> float:
    if isinstance(value, int):
        return value
    number = float(defaults[value])
    return number * 60 if value.endswith("_minutes") else number


def test_every_shipped_condition_has_the_documented_operator_threshold_and_duration(
    policy: AlertsDocument,
) -> None:
    defaults = documented_defaults()
    docs = " ".join((ROOT / "docs" / "alerts.md").read_text(encoding="utf-8").split())
    conditions = {c.key: c for c in policy.conditions}
    assert set(conditions) == set(PROMISED_TERMS) | set(PROMISED_LOSS_OF_SIGNAL)
    for key, (name, priority, operator, threshold, duration) in PROMISED_TERMS.items():
        c = conditions[key]
        assert c.name == name and f"**{name}**" in docs, key
        assert [p.lower() for p, _ in c.terms] == [priority], key
        term = getattr(c, priority)
        assert term.operator == operator, key
        assert term.threshold == _documented(threshold, defaults), key
        assert term.duration == _documented(duration, defaults), key
        # A wait without a timeout is a risk once seen; it is reported only in the runs
        # that catch the worker in it, so one breaching window is enough.
        assert term.occurrences == PROMISED_OCCURRENCES.get(key, "ALL"), key
    for key, name in PROMISED_LOSS_OF_SIGNAL.items():
        c = conditions[key]
        assert c.name == name and f"**{name}**" in docs, key
        assert c.terms == [], key
    for key, c in conditions.items():
        if key not in PROMISED_EXPIRATION:
            assert c.expiration is None, key
            continue
        duration, opens, closes, ignores = PROMISED_EXPIRATION[key]
        assert c.expiration is not None, key
        assert c.expiration.duration == _documented(duration, defaults), key
        assert c.expiration.open_incident is opens, key
        assert c.expiration.close_incidents is closes, key
        assert c.expiration.ignore_on_expected_termination is ignores, key
    assert "`above 0` `at least once in` 1 minute" in docs
    # What the docs say of the expected-termination tag is what the definition ships.
    assert "(`ignore_on_expected_termination` is off)" in docs
    # "New Relic closes incidents still open after this" (violation_time_limit_hours).
    limit = float(defaults["violation_time_limit_hours"]) * 3600
    assert {c.key: c.violation_time_limit for c in policy.conditions} == dict.fromkeys(
        conditions, limit
    )
    # The documented defaults are the shipped ones (the numbers above come from the docs).
    shipped = {name: str(p.default).lower() for name, p in policy.parameters.items()}
    for name, documented in defaults.items():
        if name in shipped:
            assert shipped[name] == documented.lower(), name


def test_thresholds_are_parameters_not_literals_in_nrql(policy: AlertsDocument) -> None:
    for c in policy.conditions:
        assert not re.search(r"\d", c.nrql), f"{c.key}: a number in the NRQL"
    changed = load_alerts(
        DEFINITIONS / "alerts", {"stall_minutes": "10", "swf_backlog_stuck_minutes": "30"}
    )[0]
    by_key = {c.key: c for c in changed.conditions}
    assert by_key["worker-stalled"].critical.duration == 600
    assert by_key["swf-backlog-stuck"].critical.threshold == 1800
    unchanged = {c.key: c for c in policy.conditions}
    assert unchanged["worker-stalled"].critical.duration == 60
    assert by_key["sqs-backlog-stuck"] == unchanged["sqs-backlog-stuck"]


def test_dashboard_has_the_three_pages_and_only_integration_metrics() -> None:
    (doc,) = load_dashboards(DEFINITIONS / "dashboards", {})
    d = doc.dashboard
    assert d.name == "nri-workerwatch"
    assert [p.name for p in d.pages] == ["Workers", "Queues", "Integration health"]
    shown: set[str] = set()
    for page in d.pages:
        for widget in page.widgets:
            assert widget.query or widget.visualization == "markdown"
            shown |= metric_names(widget.query or "")
    # Every metric the integration emits appears somewhere on the dashboard.
    assert shown == catalogued_metrics(), (
        f"not on the dashboard: {sorted(catalogued_metrics() - shown)}"
    )


# ----------------------------------------------------------------------------- parameters and errors


def write(tmp_path: Path, text: str, name: str = "p.yml") -> Path:
    # surrogateescape: a lone "\udcff" in ``text`` is written as the byte 0xff (not UTF-8).
    (tmp_path / name).write_text(textwrap.dedent(text), encoding="utf-8", errors="surrogateescape")
    return tmp_path


MINIMAL = """
    parameters:
      minutes: {default: 5, min: 1}
      label: {default: "a b"}
    policy: {name: "p ${label} $$5"}
    conditions:
      - key: one
        name: One
        description: something that is long enough to read
        runbook_url: x#one
        nrql: SELECT max(workerwatch.worker.stalled) FROM Metric
        critical: {operator: above, threshold: 0, duration: "${minutes}m"}
"""


def test_parameters_substitute_typed_and_escaped(tmp_path: Path) -> None:
    (doc,) = load_alerts(write(tmp_path, MINIMAL), {"minutes": "3"})
    assert doc.policy.name == "p a b $5"
    assert doc.conditions[0].critical.duration == 180
    assert doc.conditions[0].critical.operator == "ABOVE"


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"minutes": "0"}, "--set minutes: must be at least 1"),
        ({"minutes": "five"}, "--set minutes: must be a whole number"),
        ({"stall": "1"}, "unknown parameter(s) stall in --set; known: label, minutes"),
    ],
)
def test_bad_overrides_are_clear(tmp_path: Path, sets: dict, message: str) -> None:
    with pytest.raises(DefinitionError, match=re.escape(message)):
        load_alerts(write(tmp_path, MINIMAL), sets)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("${minutes}m", "${minuts}m"), "unknown parameter ${minuts}"),
        (('duration: "${minutes}m"', "duration: 90s"), "multiple of aggregation_window"),
        (("FROM Metric", "FROM Metric SINCE 1 hour ago"), "alert NRQL cannot use SINCE"),
        (("FROM Metric", "FROM Transaction"), "must query FROM Metric"),
        (("operator: above", "operator: over"), "(one).critical.operator"),
        (("critical:", "warning_level:"), "warning_level: Extra inputs are not permitted"),
        (("key: one", "key: One Two"), "key must be lower-case words"),
        (("name: One", "name: [unclosed"), "not valid YAML at line"),
        (("name: One", "name: \udcff"), "not UTF-8 text"),
        (("name: One", "name: " + "[" * 5000 + "]" * 5000), "not valid YAML"),
    ],
)
def test_definition_errors_name_the_file_and_the_key(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    write(tmp_path, MINIMAL.replace(*change))
    with pytest.raises(DefinitionError) as info:
        load_alerts(tmp_path, {})
    assert str(tmp_path / "p.yml") in str(info.value)
    assert message in str(info.value)


def test_dashboard_layout_errors_are_clear(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
        dashboard:
          name: d
          pages:
            - name: P
              widgets:
                - {title: A, visualization: line, row: 1, column: 1, width: 6,
                   query: "SELECT max(workerwatch.worker.stalled) FROM Metric"}
                - {title: B, visualization: line, row: 2, column: 5, width: 6,
                   query: "SELECT max(workerwatch.worker.up) FROM Metric"}
        """,
    )
    with pytest.raises(DefinitionError, match="widgets 'A' and 'B' overlap at row 2, column 5"):
        load_dashboards(tmp_path, {})


def test_parse_sets() -> None:
    assert parse_sets(["a=1", "b=x=y", "a=2"]) == {"a": "2", "b": "x=y"}
    with pytest.raises(DefinitionError, match="expected NAME=VALUE"):
        parse_sets(["novalue"])


def test_the_cli_reports_definition_errors_without_a_traceback(tmp_path: Path, capsys) -> None:
    (tmp_path / "alerts").mkdir()
    write(tmp_path / "alerts", MINIMAL)
    code = alerts_main(["terraform", "--definitions", str(tmp_path), "--set", "nope=1"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("[ERR] unknown parameter(s) nope") and "Traceback" not in err


def test_managed_marker_detection() -> None:
    assert is_managed(f"text\n\n{MANAGED_MARKER} (whatever)")
    assert not is_managed("managed by hand")
    assert not is_managed(None)


# ----------------------------------------------------------------------------- packaging


def test_definitions_are_found_from_flag_env_and_checkout(tmp_path: Path) -> None:
    assert find_definitions(str(tmp_path), env={}) == tmp_path
    assert find_definitions(None, env={"WORKERWATCH_DEFINITIONS": "/x"}) == Path("/x")
    # Without either, the checkout the package was imported from (editable install).
    checkout = Path(cli_module.__file__).resolve().parents[3] / "definitions"
    assert find_definitions(None, env={}) == checkout
    assert (checkout / "alerts").is_dir()


def test_the_collection_path_never_imports_the_alert_tooling() -> None:
    code = textwrap.dedent(
        """
        import sys
        import workerwatch.cli
        assert "workerwatch.alerts" not in sys.modules, "cli imported the alerts package"
        import workerwatch.alerts.load, workerwatch.alerts.cli, workerwatch.alerts.nerdgraph
        assert "requests" not in sys.modules, "requests imported before a request is made"
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_user_docs_list_every_parameter() -> None:
    docs = (ROOT / "docs" / "alerts.md").read_text(encoding="utf-8")
    for doc in [
        *load_alerts(DEFINITIONS / "alerts", {}),
        *load_dashboards(DEFINITIONS / "dashboards", {}),
    ]:
        for name in doc.parameters:
            assert f"`{name}`" in docs, f"docs/alerts.md does not mention {name}"


# ----------------------------------------------------------------------------- fleet scale


def query_levels(nrql: str) -> list[str]:
    """The query at each nesting level, outermost first (nested aggregation: FROM ( ... ))."""
    levels = []
    text = nrql
    while True:
        start = re.search(r"\bFROM\s*\(", text, re.I)
        if not start:
            levels.append(text)
            return levels
        depth, index = 0, start.end() - 1
        for index in range(start.end() - 1, len(text)):
            depth += {"(": 1, ")": -1}.get(text[index], 0)
            if depth == 0:
                break
        levels.append(text[: start.start()] + "FROM <inner>" + text[index + 1 :])
        text = text[start.end() : index]


def facet_of(level: str) -> str:
    match = re.search(r"\bFACET\s+(.*?)(?:\bSINCE\b|\bTIMESERIES\b|\bLIMIT\b|$)", level, re.I)
    return match.group(1) if match else ""


@pytest.fixture(scope="module")
def dashboard():
    (doc,) = load_dashboards(DEFINITIONS / "dashboards", {})
    return doc


def widgets_with_queries(dashboard):
    return [w for page in dashboard.dashboard.pages for w in page.widgets if w.query]


def test_every_facet_at_every_level_asks_for_all_values(dashboard) -> None:
    # Without LIMIT a FACET returns 10 groups (docs use-facets, "Facet group selection"): a
    # fleet of 40 workers would show an arbitrary 10.
    for w in widgets_with_queries(dashboard):
        for level in query_levels(w.query):
            if facet_of(level):
                assert re.search(r"\bLIMIT\s+MAX\b", level), f"{w.title}: {level}"


def test_per_worker_series_are_per_host(dashboard) -> None:
    # worker@3.service exists on every host: a facet on worker.name alone merges them.
    host = dashboard.values["host_attribute"]
    worker_widgets = [
        w for w in widgets_with_queries(dashboard) if "workerwatch.worker." in w.query
    ]
    assert len(worker_widgets) >= 9
    for w in worker_widgets:
        facet = facet_of(query_levels(w.query)[-1])
        assert "worker.name" in facet and host in facet, f"{w.title}: FACET {facet}"


def test_group_gauges_are_sums_of_each_hosts_latest_value(dashboard) -> None:
    # latest() under FACET worker.group is the newest single point of any host: the group
    # totals must add each host's latest value instead.
    host = dashboard.values["host_attribute"]
    group_widgets = [w for w in widgets_with_queries(dashboard) if "workerwatch.group." in w.query]
    assert len(group_widgets) == 3
    for w in group_widgets:
        levels = query_levels(w.query)
        assert len(levels) == 2, f"{w.title}: not a nested aggregation"
        outer, inner = levels
        assert re.search(r"latest\(workerwatch\.group\.", inner), w.title
        assert host in facet_of(inner) and "worker.group" in facet_of(inner), w.title
        assert "latest(" not in outer and re.match(r"SELECT sum\(", outer), w.title
        assert facet_of(outer).strip().startswith("worker.group"), w.title


def test_host_and_group_are_template_variables_every_worker_widget_uses(dashboard) -> None:
    assert [v.name for v in dashboard.dashboard.variables] == ["host", "group"]
    host = dashboard.values["host_attribute"]
    for w in widgets_with_queries(dashboard):
        if "workerwatch.worker." in w.query or "workerwatch.group." in w.query:
            assert f"{host} IN ({{{{host}}}})" in w.query, w.title
            assert "worker.group IN ({{group}})" in w.query, w.title


def test_charts_show_their_series_labels(dashboard) -> None:
    from workerwatch.alerts.dashboard_plan import dashboard_input

    sent = dashboard_input(dashboard.dashboard, 1, {})
    charts = [
        w
        for page in sent["pages"]
        for w in page["widgets"]
        if w["visualization"]["id"] in {"viz.line", "viz.area", "viz.bar"}
    ]
    assert len(charts) >= 15
    for w in charts:
        assert w["rawConfiguration"]["legend"] == {"enabled": True}, w["title"]


# ----------------------------------------------------------------------------- conditions


def test_a_worker_that_disappears_is_watched_per_host_and_worker(policy: AlertsDocument) -> None:
    gone = _condition_using(policy, "workerwatch.worker.up")
    facet = facet_of(gone.nrql)
    assert "worker.name" in facet and policy.values["host_attribute"] in facet
    assert "workerwatch.group" not in gone.nrql, "must not depend on the group's expected"
    assert gone.critical is not None
    assert (gone.critical.operator, gone.critical.threshold) == ("BELOW", 1.0)
    # Closes when the worker is forgotten (its signal stops), without opening anything.
    assert gone.expiration is not None
    assert gone.expiration.close_incidents and not gone.expiration.open_incident


def test_expected_termination_is_not_promised_for_a_facet_signal(policy: AlertsDocument) -> None:
    # The docs tie `termination: expected` to the entity a signal belongs to; a FACET host.name
    # of FROM Metric is no entity, so the condition must not claim it and the docs must not.
    los = _condition_using(policy, "workerwatch.integration.durationSeconds")
    assert los.expiration is not None and not los.expiration.ignore_on_expected_termination
    for doc in ("docs/alerts.md", "docs/RUNBOOK.md"):
        text = " ".join((ROOT / doc).read_text(encoding="utf-8").split())
        assert "tagged `termination: expected` are ignored" not in text, doc
        assert "tagged `termination: expected` do not open" not in text, doc


def test_threshold_durations_are_limited_to_two_hours(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match=r"--set stall_minutes: must be at most 120"):
        load_alerts(DEFINITIONS / "alerts", {"stall_minutes": "121"})
    write(tmp_path, MINIMAL.replace('duration: "${minutes}m"', "duration: 3h"))
    with pytest.raises(DefinitionError) as info:
        load_alerts(tmp_path, {})
    message = str(info.value)
    assert "(one).critical.duration" in message and "60 s to 7200 s" in message
    assert "rules-limits-alerts" in message


@pytest.mark.parametrize(
    ("kind", "load", "what"),
    [("alerts", load_alerts, "policy name"), ("dashboards", load_dashboards, "dashboard name")],
)
def test_two_definitions_with_one_name_are_refused(tmp_path, kind, load, what) -> None:
    """Apply finds a resource by its name: two files defining one name would fight over it."""
    (shipped,) = (Path(__file__).resolve().parent.parent / "definitions" / kind).glob("*.yml")
    for copy in ("a.yml", "b.yml"):
        (tmp_path / copy).write_text(shipped.read_text())
    with pytest.raises(DefinitionError, match=f"^{re.escape(str(tmp_path))}: .*{what}"):
        load(tmp_path, {})
