"""``nri-workerwatch discover``: read the host and propose a configuration.

Which processes are workers (this rule is also ``--help``'s and the README's): a process that
has run for at least ``--min-age`` (default 60 s: one-off commands are left out), is not
a shell, a system package's program (a script or binary under /usr, /bin, /sbin, /lib,
/snap) or nri-workerwatch itself, and either

- runs in an instance of a systemd template unit (``worker@3.service``), other than the
  system's own templates (getty, user sessions, ``systemd-*``), or
- is an interpreter (python, ruby, node, perl, php, java) running a script or module and
  holds a regular file open for writing (its log) or has ``WORKERWATCH_HEARTBEAT_DIR`` in
  its environment.

``--match REGEX`` keeps only the processes whose command line it matches. One group per
template unit, else one per interpreter + script; each group's match rules are checked
against the live process table with the collection's own discovery before anything is
printed, so running the one-shot with the proposal selects exactly the listed processes.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import time
from collections.abc import Sequence

from workerwatch import log
from workerwatch.commands.discover.aws import aws_lines
from workerwatch.commands.discover.grouping import Proposed, group_workers, select, verify
from workerwatch.commands.discover.render import render_group, sample_waits, yaml_quote
from workerwatch.config.agent import AGENT_CONFIG_DIR
from workerwatch.config.model import ConfigError
from workerwatch.host import survey
from workerwatch.units import human_duration, parse_duration

AGENT_FILE = os.path.join(AGENT_CONFIG_DIR, "workerwatch-config.yml")


def propose(ns: argparse.Namespace) -> tuple[str, list[Proposed]]:
    """The proposal's YAML text (validated by the config loader) and its groups."""
    from workerwatch.config.load import parse

    workers = select(survey.processes(), ns.min_age, ns.match)
    proposals = group_workers(workers)
    verify(proposals)
    waits = sample_waits([m for p in proposals for m in p.members], ns.sample)
    host = socket.gethostname()
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    lines = [
        f"# Proposed by `nri-workerwatch discover` on {host}, {when}.",
        "# Workers: processes in a systemd template unit (worker@N.service), or interpreters",
        "# running a script that hold a file open for writing or set WORKERWATCH_HEARTBEAT_DIR;",
        f"# running for {human_duration(ns.min_age)} or more; not shells, system packages'",
        "# programs (/usr, /bin, /lib...) or nri-workerwatch itself"
        + (f"; command line matching {ns.match!r}." if ns.match else "."),
        "# Each group's match rules were checked against the live process table with the",
        "# collection's own discovery: they select exactly the pids listed above the group.",
    ]
    if ns.state_dir:
        lines.append(f"state_dir: {yaml_quote(ns.state_dir)}")
    usable = [p for p in proposals if p.problem is None]
    if not usable:
        return "", proposals
    lines.append("groups:")
    for p in proposals:
        lines.extend(render_group(p, waits))
    lines.extend(aws_lines([m for p in usable for m in p.members], ns))
    text = "\n".join(lines) + "\n"
    parse(text, "<proposal>")  # the config loader accepts it as printed
    return text, proposals


def agent_file(proposal: str) -> str:
    """An integrations.d file (definitions/agent/workerwatch-config.yml.sample's layout)."""
    body = "\n".join(("      " + line) if line else "" for line in proposal.splitlines())
    return (
        "# nri-workerwatch, one-shot mode, run by the New Relic infrastructure agent every\n"
        "# `interval` (definitions/agent/workerwatch-config.yml.sample explains each key).\n"
        "integrations:\n"
        "  - name: nri-workerwatch\n"
        "    exec:\n"
        f"      - {yaml_quote(sys.executable)}\n"
        "      - /var/db/newrelic-infra/newrelic-integrations/bin/nri-workerwatch\n"
        "    env:\n"
        "      METRICS: true\n"
        "      INVENTORY: true\n"
        "      EVENTS: true\n"
        "    interval: 30s\n"
        "    # one run ends by the config's deadline (20 s by default)\n"
        "    timeout: 60s\n"
        "    inventory_source: config/workerwatch\n"
        "    config:\n"
        f"{body}\n"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nri-workerwatch discover",
        description="Read this host's processes and print a proposed configuration.",
        epilog=__doc__.split("\n\n", 1)[1]
        .split("\n\n``--match")[0]
        .replace(" (this rule is also ``--help``'s and the README's)", "")
        .replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--match", metavar="REGEX", help="only processes whose command line matches"
    )
    parser.add_argument("--min-age", default="60s", help="youngest process taken (default 60s)")
    parser.add_argument(
        "--sample", default="3s", help="how long to watch the workers' timed waits (default 3s)"
    )
    parser.add_argument(
        "--swf-domain", action="append", metavar="NAME",
        help="an SWF domain the workers poll (names are not visible on the host)",
    )  # fmt: skip
    parser.add_argument(
        "--sqs-queue", action="append", metavar="NAME_OR_URL",
        help="an SQS queue the workers consume",
    )  # fmt: skip
    parser.add_argument("--state-dir", help="state_dir to write into the proposal")
    parser.add_argument("--write", metavar="FILE", help="write the proposal to FILE")
    parser.add_argument(
        "--agent", action="store_true",
        help=f"an integrations.d file for the agent (written to {AGENT_FILE} unless --write)",
    )  # fmt: skip
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: Sequence[str]) -> int:
    ns = build_parser().parse_args(list(argv))
    log.set_verbose(bool(ns.verbose))
    try:
        ns.min_age = parse_duration(ns.min_age) if ns.min_age not in ("0", "0s") else 0.0
        ns.sample = parse_duration(ns.sample) if ns.sample not in ("0", "0s") else 0.0
        if ns.match:
            re.compile(ns.match)
    except (ValueError, re.error) as exc:
        log.fatal(f"discover: {exc}")
        return 1
    target = ns.write or (AGENT_FILE if ns.agent else None)
    if target and os.path.exists(target) and not ns.force:
        log.fatal(f"discover: {target} exists; --force to overwrite it")
        return 1
    try:
        text, proposals = propose(ns)
    except ConfigError as exc:  # a proposal the loader refuses is a bug here: say it plainly
        log.fatal(f"discover: the proposal does not load: {exc}")
        return 1
    for p in proposals:
        if p.problem:
            log.warn(f"group {p.name}: {p.problem}")
    if not text:
        log.error(
            "discover: no worker found by the rule in `nri-workerwatch discover --help`"
            + (f" among the command lines matching {ns.match!r}" if ns.match else "")
            + "; nothing written"
        )
        return 1
    if ns.agent:
        text = agent_file(text)
    if not target:
        sys.stdout.write(text)
        return 0
    try:
        tmp = f"{target}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except OSError as exc:
        log.fatal(f"discover: cannot write {target}: {exc.strerror or exc}")
        return 1
    log.info(f"wrote {target} ({sum(len(p.members) for p in proposals)} workers)")
    return 0
