"""Terraform export: parsed back with python-hcl2 always, ``terraform fmt -check`` when installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest
from hcl2 import SerializationOptions
from workerwatch.alerts import terraform as terraform_module
from workerwatch.alerts.cli import alerts_main, dashboards_main
from workerwatch.alerts.load import load_alerts, load_dashboards
from workerwatch.alerts.terraform import Block, identifier, render

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


TF = terraform_module


@pytest.fixture(scope="module")
def module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Alerts and dashboard generated into one directory, as docs/alerts.md says to."""
    folder = tmp_path_factory.mktemp("tf")
    for main in (alerts_main, dashboards_main):
        code = main(["terraform", "--definitions", str(DEFINITIONS), "-o", f"{folder}/"])
        assert code == 0
    return folder


@pytest.fixture(scope="module")
def alerts_text(module: Path) -> str:
    return (module / TF.RESOURCE_FILES["alerts"]).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def dashboards_text(module: Path) -> str:
    return (module / TF.RESOURCE_FILES["dashboards"]).read_text(encoding="utf-8")


ACCOUNT_REF = "${var.workerwatch_account_id}"
RUNBOOK_REF = "${var.workerwatch_runbook_base_url}"


def test_alerts_hcl_parses_and_matches_the_definitions(alerts_text: str) -> None:
    (doc,) = load_alerts(DEFINITIONS / "alerts", {})
    parsed = parse(alerts_text)
    assert "terraform" not in parsed, "the provider requirement lives in versions.tf only"
    (policy,) = resources(parsed, "newrelic_alert_policy").items()
    assert policy[1]["name"] == doc.policy.name
    assert policy[1]["account_id"] == ACCOUNT_REF
    assert policy[1]["incident_preference"] == "PER_CONDITION_AND_TARGET"
    conditions = resources(parsed, "newrelic_nrql_alert_condition")
    assert set(conditions) == {identifier(c.key) for c in doc.conditions}
    for c in doc.conditions:
        body = conditions[identifier(c.key)]
        assert body["policy_id"] == f"${{newrelic_alert_policy.{policy[0]}.id}}"
        assert body["account_id"] == ACCOUNT_REF
        assert body["name"] == c.name
        assert value(body["description"]) == c.full_description
        assert body["runbook_url"] == f"{RUNBOOK_REF}#{c.key}"
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
            assert body["open_violation_on_expiration"] is c.expiration.open_incident
            assert body["close_violations_on_expiration"] is c.expiration.close_incidents
            assert body["ignore_on_expected_termination"] is (
                c.expiration.ignore_on_expected_termination
            )


def test_dashboards_hcl_parses_with_pages_and_sorted_widgets(dashboards_text: str) -> None:
    (doc,) = load_dashboards(DEFINITIONS / "dashboards", {})
    parsed = parse(dashboards_text)
    (dashboard,) = resources(parsed, "newrelic_one_dashboard").values()
    assert dashboard["name"] == "nri-workerwatch"
    assert dashboard["permissions"] == "public_read_only"
    assert [v["name"] for v in dashboard["variable"]] == ["host", "group"]
    for variable in dashboard["variable"]:
        assert variable["default_values"] == ["*"] and variable["is_multi_selection"] is True
        assert variable["nrql_query"][0]["account_ids"] == [ACCOUNT_REF]
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
                assert widget["nrql_query"][0]["account_id"] == ACCOUNT_REF
            else:
                assert value(widget["text"]).replace(RUNBOOK_REF, "docs/RUNBOOK.md") == w.text
            if kind in {"widget_line", "widget_area", "widget_bar"}:
                assert widget["legend_enabled"] is True
        assert len(set(positions)) == len(positions)


def parse_module(folder: Path) -> list[dict]:
    return [parse(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.tf"))]


def test_alerts_and_dashboard_in_one_directory_declare_the_provider_once(module: Path) -> None:
    # The documented recipe writes both into one module: two required_providers blocks fail
    # `terraform init` with "Duplicate required providers configuration".
    blocks = [
        providers
        for parsed in parse_module(module)
        for terraform_block in parsed.get("terraform", [])
        for providers in terraform_block.get("required_providers", [])
    ]
    assert len(blocks) == 1
    newrelic = blocks[0]["newrelic"]
    # ignore_on_expected_termination exists from provider 3.42.0 (its CHANGELOG).
    assert newrelic == {"source": "newrelic/newrelic", "version": ">= 3.42.0"}
    assert sorted(p.name for p in module.glob("*.tf")) == [
        "versions.tf",
        "workerwatch_alerts.tf",
        "workerwatch_dashboard.tf",
        "workerwatch_variables.tf",
    ]


def _variables(folder: Path) -> dict[str, dict]:
    parsed = parse((folder / TF.VARIABLES_FILE).read_text(encoding="utf-8"))
    return {name: body for entry in parsed["variable"] for name, body in entry.items()}


def test_account_and_runbook_are_variables_with_placeholders_said(module: Path) -> None:
    variables = _variables(module)
    assert set(variables) == {"workerwatch_account_id", "workerwatch_runbook_base_url"}
    assert "default" not in variables["workerwatch_account_id"]
    assert variables["workerwatch_runbook_base_url"]["default"] == "docs/RUNBOOK.md"
    text = (module / TF.VARIABLES_FILE).read_text(encoding="utf-8")
    assert text.count("# PLACEHOLDER:") == 2


def test_given_values_become_defaults_without_placeholders(tmp_path: Path) -> None:
    url = "https://github.com/example/ops/blob/main/docs/RUNBOOK.md"
    argv = ["terraform", "--definitions", str(DEFINITIONS), "-o", str(tmp_path / "a.tf")]
    assert alerts_main([*argv, "--account-id", "42", "--set", f"runbook_base_url={url}"]) == 0
    variables = _variables(tmp_path)
    assert variables["workerwatch_account_id"]["default"] == 42
    assert variables["workerwatch_runbook_base_url"]["default"] == url
    assert "PLACEHOLDER" not in (tmp_path / TF.VARIABLES_FILE).read_text(encoding="utf-8")
    assert (tmp_path / "a.tf").exists() and (tmp_path / TF.VERSIONS_FILE).exists()


def test_a_versions_tf_of_the_team_is_never_replaced(tmp_path: Path, capsys) -> None:
    theirs = 'terraform {\n  required_version = ">= 1.5"\n}\n'
    (tmp_path / "versions.tf").write_text(theirs, encoding="utf-8")
    code = alerts_main(["terraform", "--definitions", str(DEFINITIONS), "-o", f"{tmp_path}/"])
    assert code == 1
    assert "use --no-provider-block" in capsys.readouterr().err
    assert (tmp_path / "versions.tf").read_text(encoding="utf-8") == theirs
    assert not (tmp_path / TF.RESOURCE_FILES["alerts"]).exists()
    argv = ["terraform", "--definitions", str(DEFINITIONS), "--no-provider-block"]
    assert alerts_main([*argv, "-o", f"{tmp_path}/"]) == 0
    assert (tmp_path / "versions.tf").read_text(encoding="utf-8") == theirs


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


def test_stdout_holds_one_complete_module(capsys) -> None:
    assert dashboards_main(["terraform", "--definitions", str(DEFINITIONS)]) == 0
    parsed = parse(capsys.readouterr().out)
    assert "newrelic_one_dashboard" in parsed["resource"][0]
    assert len(parsed["terraform"]) == 1 and len(parsed["variable"]) == 2


TERRAFORM = shutil.which("terraform")
# No plugin cache, no update check: fmt and providers need neither, and CI has no network.
TF_ENV = {"PATH": "/usr/bin:/bin", "CHECKPOINT_DISABLE": "1"}


def terraform(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TERRAFORM or "terraform", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        env={**TF_ENV, "HOME": str(folder)},
    )


@pytest.mark.skipif(TERRAFORM is None, reason="terraform is not installed")
def test_terraform_fmt_accepts_the_output(module: Path) -> None:
    result = terraform(module, "fmt", "-check", "-diff", "-no-color", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(TERRAFORM is None, reason="terraform is not installed")
def test_terraform_loads_the_module_and_its_provider_requirement(module: Path) -> None:
    # `terraform providers` reads the whole configuration (a duplicate required_providers is
    # an error here) without installing anything.
    result = terraform(module, "providers", "-no-color")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "provider[registry.terraform.io/newrelic/newrelic] >= 3.42.0" in result.stdout


PLUGIN_DIR = os.environ.get("WORKERWATCH_TF_PLUGIN_DIR")


@pytest.mark.skipif(
    TERRAFORM is None or not PLUGIN_DIR,
    reason="terraform validate needs the newrelic provider: set WORKERWATCH_TF_PLUGIN_DIR to a "
    "directory holding it (the Terraform registry is not reachable from here)",
)
def test_terraform_validate(module: Path, tmp_path: Path) -> None:
    work = tmp_path / "module"
    shutil.copytree(module, work)
    init = terraform(work, "init", "-backend=false", "-no-color", f"-plugin-dir={PLUGIN_DIR}")
    assert init.returncode == 0, init.stdout + init.stderr
    result = terraform(work, "validate", "-no-color")
    assert result.returncode == 0, result.stdout + result.stderr
