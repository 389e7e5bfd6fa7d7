"""``nri-workerwatch alerts ...`` and ``nri-workerwatch dashboards ...``.

    plan        print, field by field, what apply would create, update, delete or leave alone
    apply       make exactly those changes through NerdGraph
    terraform   write the same resources as HCL for the newrelic/newrelic provider
    parameters  list the definition parameters, their defaults and the values in effect
    simulate    (alerts) replay a run's payload lines through the conditions: when each
                incident would open and close

The User API key comes from the environment variable NEW_RELIC_API_KEY only: a flag would
leave it in shell history and process listings. It is never printed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from workerwatch import log
from workerwatch.alerts.params import DefinitionError, parse_sets
from workerwatch.sanitize import redact

API_KEY_ENV = "NEW_RELIC_API_KEY"
ACCOUNT_ENV = "NEW_RELIC_ACCOUNT_ID"
DEFINITIONS_ENV = "WORKERWATCH_DEFINITIONS"


def find_definitions(explicit: str | None, env: dict[str, str] | None = None) -> Path:
    """``--definitions``, else $WORKERWATCH_DEFINITIONS, else the first that exists of: the
    source checkout's ``definitions/``, package data ``workerwatch/definitions``, and
    ``<prefix>/share/nri-workerwatch/definitions`` (where a wheel's data files land)."""
    env = dict(os.environ) if env is None else env
    if explicit:
        return Path(explicit)
    if env.get(DEFINITIONS_ENV):
        return Path(env[DEFINITIONS_ENV])
    here = Path(__file__).resolve()
    candidates = [here.parents[3] / "definitions"]
    with contextlib.suppress(ModuleNotFoundError, TypeError):
        candidates.append(Path(str(resources.files("workerwatch") / "definitions")))
    candidates.append(Path(sys.prefix) / "share" / "nri-workerwatch" / "definitions")
    for candidate in candidates:
        if (candidate / "alerts").is_dir() or (candidate / "dashboards").is_dir():
            return candidate
    raise DefinitionError(
        "cannot find the definitions directory (looked in "
        + ", ".join(str(c) for c in candidates)
        + "); pass --definitions DIR"
    )


def _parser(kind: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"nri-workerwatch {kind}",
        description=(
            f"Install the nri-workerwatch {kind} in a New Relic account from "
            f"definitions/{kind}/ (plan, apply), or export them as Terraform."
        ),
        epilog=f"The User API key is read from ${API_KEY_ENV}; it is never a flag.",
    )
    actions = ["plan", "apply", "terraform", "parameters"]
    parser.add_argument("action", choices=[*actions, "simulate"] if kind == "alerts" else actions)
    if kind == "alerts":
        parser.add_argument(
            "--payloads",
            default=None,
            metavar="FILE",
            help="simulate: protocol-v4 payload lines of a run, oldest first ('-' for stdin)",
        )
    parser.add_argument(
        "--account-id",
        type=int,
        default=None,
        help=f"New Relic account id (default ${ACCOUNT_ENV}); optional for terraform",
    )
    parser.add_argument("--region", choices=["us", "eu"], default="us", help="NerdGraph region")
    parser.add_argument(
        "--endpoint", default=None, help="NerdGraph URL, overriding --region (for tests)"
    )
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a definition parameter, e.g. --set stall_minutes=10 (repeatable)",
    )
    parser.add_argument(
        "--definitions", default=None, help="definitions directory (holds alerts/, dashboards/)"
    )
    parser.add_argument(
        "--output",
        "-o",
        default="-",
        help=(
            "terraform: a directory (versions.tf, workerwatch_variables.tf and the resource "
            "file) or a .tf file (the shared files are written next to it); default stdout"
        ),
    )
    parser.add_argument(
        "--no-provider-block",
        action="store_true",
        help="terraform: no versions.tf (your module already declares required_providers)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help=(
            "seconds the whole command may take: every NerdGraph request, retry and wait "
            "(default 30)"
        ),
    )
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    return parser


def alerts_main(argv: list[str]) -> int:
    return _main("alerts", argv)


def dashboards_main(argv: list[str]) -> int:
    return _main("dashboards", argv)


def _main(kind: str, argv: Sequence[str]) -> int:
    ns = _parser(kind).parse_args(list(argv))
    log.set_verbose(ns.verbose)
    secret = os.environ.get(API_KEY_ENV, "").strip()
    try:
        return _run(kind, ns, secret)
    except DefinitionError as exc:
        for line in str(exc).splitlines():
            log.error(line)
        return 1
    except Exception as exc:  # last line of defence: keep the key out of any message
        from workerwatch.alerts.nerdgraph import NerdGraphError

        text = redact(str(exc), [secret] if secret else [])
        if isinstance(exc, NerdGraphError):
            log.error(text)
            return 1
        log.error(f"unexpected {type(exc).__name__}: {text}")
        return 1


def _run(kind: str, ns: argparse.Namespace, secret: str) -> int:
    from workerwatch.alerts.load import load_alerts, load_dashboards

    overrides = parse_sets(ns.sets)
    directory = find_definitions(ns.definitions) / kind
    docs: list[Any] = (load_alerts if kind == "alerts" else load_dashboards)(directory, overrides)

    account_id = ns.account_id
    if account_id is None and os.environ.get(ACCOUNT_ENV, "").strip():
        try:
            account_id = int(os.environ[ACCOUNT_ENV])
        except ValueError:
            raise DefinitionError(f"${ACCOUNT_ENV} must be a number") from None
    if not ns.timeout > 0:
        raise DefinitionError("--timeout must be a positive number of seconds")
    if account_id is not None and account_id <= 0:
        raise DefinitionError("--account-id must be a positive number")

    if ns.action == "parameters":
        return _print_parameters(docs)
    if ns.action == "simulate":
        return _simulate(docs, ns.payloads)
    if ns.action == "terraform":
        return _terraform(kind, directory, overrides, docs, account_id, ns)

    if account_id is None:
        raise DefinitionError(f"--account-id is required for {ns.action} (or set ${ACCOUNT_ENV})")
    if not secret:
        raise DefinitionError(
            f"set {API_KEY_ENV} to a New Relic User API key (NRAK-...) for account {account_id}"
        )
    _warn_runbook(docs)

    from workerwatch.alerts.nerdgraph import ENDPOINTS, NerdGraphClient
    from workerwatch.alerts.plan import ApplyError, Plan
    from workerwatch.alerts.render import render

    endpoint = ns.endpoint or ENDPOINTS[ns.region]
    planner: Callable[..., Plan]
    applier: Callable[..., None]
    if kind == "alerts":
        from workerwatch.alerts.alert_plan import apply_alerts, plan_alerts

        planner, applier = plan_alerts, apply_alerts
        what = "alert policy"
    else:
        from workerwatch.alerts.dashboard_plan import apply_dashboards, plan_dashboards

        planner, applier = plan_dashboards, apply_dashboards
        what = "dashboards"
    with NerdGraphClient(
        endpoint, secret, budget=ns.timeout, log=log.debug, say=log.warn
    ) as client:
        plan = planner(client, account_id, docs)
        for line in render(plan, what):
            print(line)
        if ns.action == "plan":
            return 0
        if not plan.pending:
            print("Nothing to apply.")
            return 0
        try:
            applier(client, plan, lambda message: print(f"  {message}"))
        except ApplyError as exc:
            text = redact(str(exc.cause), [secret] if secret else [])
            log.error(text)
            log.error(
                f"apply stopped: {len(exc.done)} change(s) made, {exc.remaining} not made"
                + (": " + "; ".join(exc.done) if exc.done else "")
                + ". Run plan to see what remains."
            )
            return 1
        print(f"Apply complete: {len(plan.pending)} change(s) made.")
    return 0


def _terraform(
    kind: str,
    directory: Path,
    overrides: dict[str, str],
    docs: list[Any],
    account_id: int | None,
    ns: argparse.Namespace,
) -> int:
    from workerwatch.alerts import terraform
    from workerwatch.alerts.load import load_alerts, load_dashboards

    runbook = next(
        (str(d.values["runbook_base_url"]) for d in docs if "runbook_base_url" in d.values), ""
    )
    if runbook:
        # Loaded again with a stand-in for the runbook address, which stays a variable.
        loader = load_alerts if kind == "alerts" else load_dashboards
        docs = loader(directory, {**overrides, "runbook_base_url": terraform.RUNBOOK_SENTINEL})
    resources = (terraform.alerts_hcl if kind == "alerts" else terraform.dashboards_hcl)(docs)
    shared = {terraform.VARIABLES_FILE: terraform.variables_tf(account_id, runbook)}
    if not ns.no_provider_block:
        shared = {terraform.VERSIONS_FILE: terraform.versions_tf(), **shared}
    if ns.output == "-":
        sys.stdout.write("\n".join([*shared.values(), resources]))
        sys.stdout.flush()
        return 0
    target = Path(ns.output)
    if target.is_dir() or ns.output.endswith("/"):
        folder, resource_path = target, target / terraform.RESOURCE_FILES[kind]
    else:
        folder, resource_path = target.parent, target
    files = {folder / name: text for name, text in shared.items()}
    for path in files:
        # The shared files are written by alerts and dashboards alike, with the same content;
        # a file of the same name that we did not write is someone else's: never replaced.
        if path.exists() and terraform.GENERATED not in path.read_text(errors="replace")[:200]:
            raise DefinitionError(
                f"{path} exists and was not written by nri-workerwatch; not replacing it. "
                + (
                    "If it declares required_providers, use --no-provider-block."
                    if path.name == terraform.VERSIONS_FILE
                    else "Write into another directory."
                )
            )
    files[resource_path] = resources
    folder.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _simulate(docs: list[Any], source: str | None) -> int:
    from workerwatch.alerts.simulate import read_payloads, report

    if not source:
        raise DefinitionError("simulate needs --payloads FILE (the run's payload lines)")
    if source == "-":
        lines = sys.stdin.read().splitlines()
    else:
        try:
            lines = Path(source).read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            raise DefinitionError(f"{source}: cannot read: {exc.strerror or exc}") from None
    points = read_payloads(lines, source)
    for line in report(docs, points, source):
        print(line)
    return 0


def _print_parameters(docs: list[Any]) -> int:
    for doc in docs:
        print(f"{doc.source}:")
        for name, param in doc.parameters.items():
            value = doc.values.get(name, param.default)
            marker = "" if value == param.default else f" (set: {value!r})"
            print(f"  {name} = {param.default!r}{marker}")
            if param.description:
                print(f"      {' '.join(param.description.split())}")
    return 0


def _warn_runbook(docs: list[Any]) -> None:
    for doc in docs:
        base = doc.values.get("runbook_base_url")
        if isinstance(base, str) and not base.startswith(("https://", "http://")):
            log.warn(
                f"runbook_base_url is {base!r}, not a web address: runbook links in incidents "
                "will not be clickable. Use --set runbook_base_url=https://<your repository>/"
                "docs/RUNBOOK.md"
            )
            return
