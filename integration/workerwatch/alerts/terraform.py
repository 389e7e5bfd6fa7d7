"""Terraform (HCL) export of the same definitions, for the newrelic/newrelic provider.

Resources and arguments follow the provider docs (``website/docs/r/alert_policy``,
``nrql_alert_condition`` and ``one_dashboard``). The text is written already in
``terraform fmt`` layout (two-space indent, ``=`` aligned across consecutive attributes) so a
``terraform fmt -check`` in CI passes on it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workerwatch import __version__
from workerwatch.alerts import TOOL
from workerwatch.alerts.dashboard_models import CHARTS, DashboardDocument, Variable, Widget
from workerwatch.alerts.models import AlertsDocument, Condition


@dataclass
class Block:
    """An HCL block: ``type "label" ... { body }``."""

    type: str
    labels: tuple[str, ...] = ()
    body: list[Any] = field(default_factory=list)  # ("attr", key, value) | Block | None (blank)

    def attr(self, key: str, value: Any) -> Block:
        if value is not None:
            self.body.append(("attr", key, value))
        return self

    def raw(self, key: str, expression: str) -> Block:
        self.body.append(("raw", key, expression))
        return self

    def block(self, child: Block) -> Block:
        self.body.append(child)
        return self

    def blank(self) -> Block:
        self.body.append(None)
        return self

    def comment(self, text: str) -> Block:
        self.body.append(("comment", "", text))
        return self


def identifier(text: str) -> str:
    """A Terraform resource name: letters, digits, underscores, not starting with a digit."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_").lower() or "resource"
    return f"r_{name}" if name[0].isdigit() else name


def quote(text: str) -> str:
    """An HCL quoted string. ``${`` and ``%{`` start templates in HCL, so they are doubled."""
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif char == '"':
            out.append('\\"')
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    text = "".join(out).replace("${", "$${").replace("%{", "%%{")
    # The runbook base URL stays a Terraform variable: its placeholder becomes a reference.
    return '"' + text.replace(RUNBOOK_SENTINEL, "${var." + RUNBOOK_VARIABLE + "}") + '"'


def literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return quote(value)
    raise TypeError(f"no HCL literal for {type(value).__name__}")


def render(blocks: Iterable[Block], header: Iterable[str] = ()) -> str:
    lines = [f"# {line}".rstrip() for line in header]
    if lines:
        lines.append("")
    for index, block in enumerate(blocks):
        if index:
            lines.append("")
        lines.extend(_render_block(block, 0))
    return "\n".join(lines) + "\n"


def _render_block(block: Block, depth: int) -> list[str]:
    pad = "  " * depth
    labels = "".join(f" {quote(label)}" for label in block.labels)
    lines = [f"{pad}{block.type}{labels} {{"]
    group: list[tuple[str, str]] = []

    def flush() -> None:
        # terraform fmt aligns "=" across a run of single-line attributes.
        width = max((len(key) for key, _ in group), default=0)
        for key, value in group:
            lines.append(f"{pad}  {key.ljust(width)} = {value}")
        group.clear()

    previous_was_block = False
    for item in block.body:
        if item is None:
            flush()
            lines.append("")
            previous_was_block = False
        elif isinstance(item, Block):
            flush()
            if len(lines) > 1 and lines[-1] != "" and not lines[-1].endswith("{"):
                lines.append("")
            lines.extend(_render_block(item, depth + 1))
            previous_was_block = True
        else:
            if previous_was_block:
                lines.append("")
                previous_was_block = False
            kind, key, value = item
            if kind == "comment":
                # A comment line ends a run of aligned attributes, as in terraform fmt.
                flush()
                lines.append(f"{pad}  # {value}")
                continue
            group.append((key, value if kind == "raw" else literal(value)))
    flush()
    lines.append(f"{pad}}}")
    return lines


# ----------------------------------------------------------------------------- resources

PROVIDER_SOURCE = "newrelic/newrelic"
# ignore_on_expected_termination, which every condition sets, arrived in provider v3.42.0
# (terraform-provider-newrelic CHANGELOG, "nrqlcondition: add new field
# ignore_on_expected_termination", #2700).
PROVIDER_VERSION = ">= 3.42.0"
ACCOUNT_VARIABLE = "workerwatch_account_id"
RUNBOOK_VARIABLE = "workerwatch_runbook_base_url"
# Stands for the runbook base URL while the definitions are loaded for Terraform; quote()
# turns it into ${var.workerwatch_runbook_base_url}.
RUNBOOK_SENTINEL = "@@workerwatch-runbook-base-url@@"
VERSIONS_FILE = "versions.tf"
VARIABLES_FILE = "workerwatch_variables.tf"
RESOURCE_FILES = {"alerts": "workerwatch_alerts.tf", "dashboards": "workerwatch_dashboard.tf"}
GENERATED = f"Generated by `{TOOL} "
ACCOUNT_REF = f"var.{ACCOUNT_VARIABLE}"


def _header(kind: str, sources: Iterable[str], values: Mapping[str, Any]) -> list[str]:
    lines = [
        f"{GENERATED}{kind} terraform` ({TOOL} {__version__}) from:",
        # Directory and file name only: the output must not depend on where the repo sits.
        *(f"  {Path(source).parent.name}/{Path(source).name}" for source in sources),
        "Regenerate instead of editing; parameter values used:",
    ]
    lines += [
        f"  {name} = {json.dumps(value)}"
        for name, value in sorted(values.items())
        if name != "runbook_base_url"
    ]
    lines.append(f"The account and the runbook address are variables: see {VARIABLES_FILE}.")
    return lines


def versions_tf() -> str:
    """The module's one provider requirement, shared by the alert and dashboard files."""
    providers = Block("required_providers").raw(
        "newrelic",
        f'{{\n      source  = "{PROVIDER_SOURCE}"\n      version = "{PROVIDER_VERSION}"\n    }}',
    )
    header = [
        f"{GENERATED}alerts|dashboards terraform` ({TOOL} {__version__}).",
        "The one provider requirement of the generated files; leave it out with",
        "--no-provider-block when your module already declares required_providers.",
    ]
    return render([Block("terraform").block(providers)], header)


def variables_tf(account_id: int | None, runbook_base_url: str) -> str:
    """The inputs a team sets: the account, and where its copy of RUNBOOK.md is published."""
    account = Block("variable", (ACCOUNT_VARIABLE,))
    account.attr("description", "New Relic account id the policy and the dashboard belong to.")
    account.raw("type", "number")
    if account_id is None:
        account.comment("PLACEHOLDER: no default; set it in terraform.tfvars, with -var or")
        account.comment(f"TF_VAR_{ACCOUNT_VARIABLE}.")
    else:
        account.attr("default", account_id)
    runbook = Block("variable", (RUNBOOK_VARIABLE,))
    runbook.attr(
        "description",
        "Web address of your copy of docs/RUNBOOK.md; incidents link to its sections.",
    )
    runbook.raw("type", "string")
    if not runbook_base_url.startswith(("https://", "http://")):
        runbook.comment("PLACEHOLDER: not a web address, so runbook links in incidents will not")
        runbook.comment("open. Set it to e.g. https://github.com/YOUR-ORG/nri-workerwatch/blob/")
        runbook.comment("main/docs/RUNBOOK.md.")
    runbook.attr("default", runbook_base_url)
    header = [
        f"{GENERATED}alerts|dashboards terraform` ({TOOL} {__version__}).",
        "Inputs of the generated alert policy and dashboard.",
    ]
    return render([account, runbook], header)


def _condition_block(c: Condition, policy_ref: str) -> Block:
    b = Block("resource", ("newrelic_nrql_alert_condition", identifier(c.key)))
    b.raw("account_id", ACCOUNT_REF)
    b.raw("policy_id", f"{policy_ref}.id")
    b.attr("type", "static")
    b.attr("name", c.name)
    b.attr("description", c.full_description)
    b.attr("runbook_url", c.runbook_url)
    b.attr("enabled", c.enabled)
    b.attr("violation_time_limit_seconds", c.violation_time_limit)
    s = c.signal
    b.attr("aggregation_window", s.aggregation_window)
    b.attr("aggregation_method", s.aggregation_method.lower())
    b.attr("aggregation_delay", s.aggregation_delay)
    b.attr("aggregation_timer", s.aggregation_timer)
    b.attr("slide_by", s.slide_by)
    b.attr("evaluation_delay", s.evaluation_delay)
    b.attr("fill_option", s.fill_option.lower())
    b.attr("fill_value", s.fill_value)
    if c.expiration is not None:
        b.attr("expiration_duration", c.expiration.duration)
        b.attr("open_violation_on_expiration", c.expiration.open_incident)
        b.attr("close_violations_on_expiration", c.expiration.close_incidents)
        b.attr("ignore_on_expected_termination", c.expiration.ignore_on_expected_termination)
    b.block(Block("nrql").attr("query", c.nrql))
    for priority, term in c.terms:
        b.block(
            Block(priority.lower())
            .attr("operator", term.operator.lower())
            .attr("threshold", float(term.threshold))
            .attr("threshold_duration", term.duration)
            .attr("threshold_occurrences", term.occurrences.lower())
        )
    return b


def alerts_hcl(docs: list[AlertsDocument]) -> str:
    blocks: list[Block] = []
    values: dict[str, Any] = {}
    for doc in docs:
        values.update(doc.values)
        policy_name = identifier(doc.policy.name.replace(f"{TOOL}:", "").strip() or "policy")
        policy = Block("resource", ("newrelic_alert_policy", policy_name))
        policy.raw("account_id", ACCOUNT_REF)
        policy.attr("name", doc.policy.name)
        policy.attr("incident_preference", doc.policy.incident_preference)
        blocks.append(policy)
        ref = f"newrelic_alert_policy.{policy_name}"
        blocks.extend(_condition_block(c, ref) for c in doc.conditions)
    return render(blocks, _header("alerts", [d.source for d in docs], values))


def _widget_block(w: Widget) -> Block:
    b = Block(f"widget_{w.visualization}")
    b.attr("title", w.title)
    b.attr("row", w.row)
    b.attr("column", w.column)
    b.attr("width", w.width)
    b.attr("height", w.height)
    if w.visualization == "markdown":
        b.attr("text", w.text)
        return b
    b.attr("critical", w.critical)
    b.attr("warning", w.warning)
    if w.visualization in CHARTS:
        b.attr("legend_enabled", w.legend)
    query = Block("nrql_query").raw("account_id", ACCOUNT_REF).attr("query", w.query)
    return b.block(query)


def _variable_block(v: Variable) -> Block:
    b = Block("variable")
    b.attr("name", v.name)
    b.attr("title", v.title or v.name)
    b.attr("type", "nrql")
    b.attr("is_multi_selection", v.multi)
    # "To select all default values ... use ["*"]" (terraform one_dashboard docs).
    b.raw("default_values", '["*"]' if v.default_all else "[]")
    b.attr("replacement_strategy", "string")
    return b.block(
        Block("nrql_query").raw("account_ids", f"[{ACCOUNT_REF}]").attr("query", v.query)
    )


def dashboards_hcl(docs: list[DashboardDocument]) -> str:
    blocks: list[Block] = []
    values: dict[str, Any] = {}
    for doc in docs:
        values.update(doc.values)
        d = doc.dashboard
        b = Block("resource", ("newrelic_one_dashboard", identifier(d.resource_key)))
        b.raw("account_id", ACCOUNT_REF)
        b.attr("name", d.name)
        b.attr("description", d.full_description)
        b.attr("permissions", d.permissions.lower())
        for page in d.pages:
            p = Block("page").attr("name", page.name).attr("description", page.description)
            for widget in page.sorted_widgets():
                p.block(_widget_block(widget))
            b.block(p)
        for variable in d.variables:
            b.block(_variable_block(variable))
        blocks.append(b)
    return render(blocks, _header("dashboards", [d.source for d in docs], values))
