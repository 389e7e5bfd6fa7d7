"""Terraform export: parsed back with python-hcl2 always, ``terraform fmt -check`` when installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest
from hcl2 import SerializationOptions
from workerwatch.alerts.cli import alerts_main, dashboards_main
from workerwatch.alerts.models import load_alerts, load_dashboards
from workerwatch.alerts.terraform import Block, alerts_hcl, dashboards_hcl, identifier, render

ROOT = Path(__file__).resolve().parents[1]
DEFINITIONS = ROOT / "definitions"
ACCOUNT = 1234567


def parse(text: str) -> dict:
    return hcl2.loads(
        text,
        serialization_options=SerializationOptions(strip_string_quotes=True, with_comments=False),
    )


def value(text: str) -> str:
    # python-hcl2 resolves backslash escapes but leaves HCL's template escapes as written.
    return text.replace("$${", "${").replace("%%{", "%{")


def resources(parsed: dict, kind: str) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for entry in parsed.get("resource", []):
        for name, body in entry.get(kind, {}).items():
            found[name] = body
    return found


@pytest.fixture(scope="module")
def alerts_text() -> str:
    return alerts_hcl(load_alerts(DEFINITIONS / "alerts", {}), ACCOUNT)


@pytest.fixture(scope="module")
def dashboards_text() -> str:
    return dashboards_hcl(load_dashboards(DEFINITIONS / "dashboards", {}), ACCOUNT)


def test_alerts_hcl_parses_and_matches_the_definitions(alerts_text: str) -> None:
    (doc,) = load_alerts(DEFINITIONS / "alerts", {})
    parsed = parse(alerts_text)
    assert parsed["terraform"][0]["required_providers"][0]["newrelic"]["source"] == (
        "newrelic/newrelic"
    )
    (policy,) = resources(parsed, "newrelic_alert_policy").items()
    assert policy[1]["name"] == doc.policy.name
    assert policy[1]["incident_preference"] == "PER_CONDITION_AND_TARGET"
    conditions = resources(parsed, "newrelic_nrql_alert_condition")
    assert set(conditions) == {identifier(c.key) for c in doc.conditions}
    for c in doc.conditions:
        body = conditions[identifier(c.key)]
        assert body["policy_id"] == f"${{newrelic_alert_policy.{policy[0]}.id}}"
        assert body["account_id"] == ACCOUNT
        assert body["name"] == c.name
        assert value(body["description"]) == c.full_description
        assert body["runbook_url"] == c.runbook_url
        assert body["nrql"][0]["query"] == c.nrql
        assert body["aggregation_method"] == c.signal.aggregation_method.lower()
        for priority, term in c.terms:
            (block,) = body[priority.lower()]
            assert block["operator"] == term.operator.lower()
            assert float(block["threshold"]) == term.threshold
            assert block["threshold_duration"] == term.duration
            assert block["threshold_occurrences"] == term.occurrences.lower()
        for absent in {"critical", "warning"} - {p.lower() for p, _ in c.terms}:
            assert absent not in body
        if c.expiration:
            assert body["expiration_duration"] == c.expiration.duration
            assert body["open_violation_on_expiration"] is True
            assert body["ignore_on_expected_termination"] is (
                c.expiration.ignore_on_expected_termination
            )


def test_dashboards_hcl_parses_with_pages_and_sorted_widgets(dashboards_text: str) -> None:
    (doc,) = load_dashboards(DEFINITIONS / "dashboards", {})
    parsed = parse(dashboards_text)
    (dashboard,) = resources(parsed, "newrelic_one_dashboard").values()
    assert dashboard["name"] == "nri-workerwatch"
    assert dashboard["permissions"] == "public_read_only"
    pages = dashboard["page"]
    assert [p["name"] for p in pages] == [p.name for p in doc.dashboard.pages]
    for page, defined in zip(pages, doc.dashboard.pages, strict=True):
        widgets = [
            (kind, w) for kind, items in page.items() if kind.startswith("widget_") for w in items
        ]
        assert len(widgets) == len(defined.widgets)
        # Provider docs: sort widgets by row then column, or the plan never settles.
        positions = [(w["row"], w["column"]) for _, w in widgets]
        for (kind, widget), w in zip(
            sorted(widgets, key=lambda item: (item[1]["row"], item[1]["column"])),
            defined.sorted_widgets(),
            strict=True,
        ):
            assert kind == f"widget_{w.visualization}"
            if w.query:
                assert widget["nrql_query"][0]["query"] == w.query
                assert widget["nrql_query"][0]["account_id"] == ACCOUNT
            else:
                assert value(widget["text"]) == w.text
        assert len(set(positions)) == len(positions)


def test_widgets_are_written_in_row_then_column_order(dashboards_text: str) -> None:
    for page in dashboards_text.split("\n  page {")[1:]:
        rows = [int(n) for n in re.findall(r"^ {6}row +=\s*(\d+)$", page, re.M)]
        cols = [int(n) for n in re.findall(r"^ {6}column +=\s*(\d+)$", page, re.M)]
        assert rows and len(rows) == len(cols)
        assert list(zip(rows, cols, strict=True)) == sorted(zip(rows, cols, strict=True))


def test_hcl_escapes_template_sequences_and_quotes() -> None:
    text = render([Block("resource", ("x", "y")).attr("s", 'a "${b}" %{c} \\ \n')])
    assert value(parse(text)["resource"][0]["x"]["y"]["s"]) == 'a "${b}" %{c} \\ \n'


def test_identifiers_are_valid_terraform_names() -> None:
    assert identifier("worker-stalled") == "worker_stalled"
    assert identifier("9 lives") == "r_9_lives"


def test_cli_writes_the_file_and_omits_account_and_provider_when_asked(
    tmp_path: Path, capsys
) -> None:
    target = tmp_path / "alerts.tf"
    code = alerts_main(
        [
            "terraform",
            "--definitions",
            str(DEFINITIONS),
            "-o",
            str(target),
            "--no-provider-block",
            "--set",
            "stall_minutes=10",
        ]
    )
    assert code == 0
    parsed = parse(target.read_text(encoding="utf-8"))
    assert "terraform" not in parsed
    stalled = resources(parsed, "newrelic_nrql_alert_condition")["worker_stalled"]
    assert "account_id" not in stalled
    assert stalled["critical"][0]["threshold_duration"] == 600
    assert dashboards_main(["terraform", "--definitions", str(DEFINITIONS)]) == 0
    assert "newrelic_one_dashboard" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed")
def test_terraform_fmt_accepts_the_output(tmp_path: Path, alerts_text: str, dashboards_text: str):
    (tmp_path / "alerts.tf").write_text(alerts_text, encoding="utf-8")
    (tmp_path / "dashboards.tf").write_text(dashboards_text, encoding="utf-8")
    result = subprocess.run(
        [
            shutil.which("terraform") or "terraform",
            "fmt",
            "-check",
            "-diff",
            "-no-color",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        # No plugin cache, no update check: fmt needs neither, and CI has no network.
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CHECKPOINT_DISABLE": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
