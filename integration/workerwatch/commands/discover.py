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
import dataclasses
import glob
import os
import re
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import field
from urllib.parse import urlsplit

from workerwatch import log
from workerwatch.config.agent import AGENT_CONFIG_DIR
from workerwatch.config.model import AWS_REGION, ConfigError, Group
from workerwatch.host import heartbeat_files, survey
from workerwatch.host.discover import discover
from workerwatch.records import record
from workerwatch.sanitize import redact
from workerwatch.units import human_duration, parse_duration

AGENT_FILE = os.path.join(AGENT_CONFIG_DIR, "workerwatch-config.yml")
_INTERPRETER = re.compile(r"^(python|pypy|ruby|node|nodejs|perl|php|java)[0-9.]*$")
_SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "fish", "csh", "tcsh", "su", "sudo", "login"}
_SYSTEM_DIRS = ("/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/", "/snap/")
# The system's own template units: consoles, user sessions, systemd's helpers.
_SYSTEM_TEMPLATES = re.compile(
    r"^(getty|serial-getty|container-getty|autovt|console-getty|user|user-runtime-dir|"
    r"systemd-[\w-]+|modprobe|dbus-[\w-]+|lvm2-[\w-]+|mdmon|ifup|wpa_supplicant)@"
)
# Files a worker writes that are not its log.
# Unnamed (O_TMPFILE) files show as /dir/#inode.
_NOT_LOGS = re.compile(r"(\.(db|sqlite3?|lock|pid|tmp|swp|json|sock)|/[.#][^/]*)$")
# Python options followed by a value (python -m, -c, -W, -X): the script is what follows.
_VALUE_OPTIONS = {"-W", "-X", "--check-hash-based-pycs"}
_AWS_HOST = re.compile(r"^(swf|sqs)[.-](?:fips[.-])?([a-z]{2}(?:-[a-z]+)+-\d)\.amazonaws\.com")
_QUEUE_HOST = re.compile(r"^([a-z]{2}(?:-[a-z]+)+-\d)\.queue\.amazonaws\.com")


@record
class Proposed:
    name: str
    members: list[survey.Seen]
    unit: str | None = None  # the template pattern, e.g. worker@*.service
    cmdline: str | None = None
    why_cmdline: str = ""
    problem: str | None = None  # set when no rule selects exactly the members
    extra: list[str] = field(default_factory=list)


def _base(path: str) -> str:
    return os.path.basename(path)


def _script(argv: list[str]) -> str | None:
    """The script or module an interpreter runs: ``worker.py``, ``-m demo.worker``."""
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-m", "-c", "-jar"):
            value = next(args, "")
            return f"{arg} {value}" if arg != "-c" else None  # -c code: a one-off
        if arg in _VALUE_OPTIONS:
            next(args, None)
            continue
        if not arg.startswith("-"):
            return arg
    return None


def _is_system(path: str) -> bool:
    return path.startswith(_SYSTEM_DIRS)


def _template(unit: str | None) -> str | None:
    """``worker@3.service`` -> ``worker@*.service``, except the system's own templates."""
    if unit is None or "@" not in unit or not unit.endswith(".service"):
        return None
    if _SYSTEM_TEMPLATES.match(unit):
        return None
    return unit.split("@", 1)[0] + "@*.service"


def _logs(item: survey.Seen) -> list[str]:
    return [p for p in item.logs if not _NOT_LOGS.search(p)]


def select(procs: list[survey.Seen], min_age: float, narrow: str | None) -> list[survey.Seen]:
    """The workers, by the rule in the module docstring (details filled in for them)."""
    pattern = re.compile(narrow) if narrow else None
    chosen = []
    for item in procs:
        if item.pid == 1 or item.age < min_age or not item.argv:
            continue
        if pattern is not None and not pattern.search(item.cmdline):
            continue
        exe = _base(item.argv[0])
        if exe in _SHELLS or exe.startswith("-"):
            continue
        if _template(item.unit):
            if not _is_system(item.argv[0]) or _INTERPRETER.match(exe):
                chosen.append(item)
            continue
        if not _INTERPRETER.match(exe):
            continue
        script = _script(item.argv)
        if script is None or _is_system(script.split()[-1]):
            continue
        survey.fill_details(item)
        if _logs(item) or "WORKERWATCH_HEARTBEAT_DIR" in item.env:
            chosen.append(item)
    for item in chosen:
        if not item.detailed:
            survey.fill_details(item)
    return chosen


def _key_regex(argv0: str, script: str | None) -> str:
    """Anchored: the interpreter as started, then the script as a whole word, so
    ``worker.py`` never matches ``queue_worker.py`` (nor ``/x/worker.py.bak``)."""
    head = "^" + re.escape(argv0)
    if script is None:
        return head + "(?: |$)"
    return head + r"(?: \S+)*? " + re.escape(script) + "(?: |$)"


def _exact_regex(members: list[survey.Seen]) -> str:
    lines = sorted({m.cmdline for m in members})
    return "^(?:" + "|".join(re.escape(line) for line in lines) + ")$"


def _stem(script: str) -> str:
    """A group name from the script: ``/opt/bot/worker.py`` -> worker, ``-m demo.cron`` -> cron."""
    if script.startswith("-m "):
        return script.split()[-1].rsplit(".", 1)[-1]
    return re.sub(r"\.\w+$", "", _base(script.split()[-1]))


def group_workers(workers: list[survey.Seen]) -> list[Proposed]:
    """One group per template unit, else per interpreter + script (or program)."""
    by_key: dict[tuple[str, ...], list[survey.Seen]] = {}
    for item in workers:
        template = _template(item.unit)
        key = ("unit", template) if template else ("cmd", item.argv[0], _script(item.argv) or "")
        by_key.setdefault(key, []).append(item)
    proposals: list[Proposed] = []
    names: set[str] = set()
    # Units first: discovery gives a process to the first group that matches it, so a
    # unit's workers are claimed before a command-line group could take them too.
    for key, members in sorted(by_key.items(), key=lambda kv: (kv[0][0] != "unit", kv[0])):
        if key[0] == "unit":
            stem = key[1].split("@", 1)[0]
            proposal = Proposed(stem, members, unit=key[1])
        else:
            script = key[2] or None
            stem = _stem(script) if script else _base(key[1])
            proposal = Proposed(
                stem,
                members,
                cmdline=_key_regex(key[1], script),
                why_cmdline="the interpreter and the script as started, anchored",
            )
        name, n = re.sub(r"[^\w.@-]+", "-", proposal.name) or "workers", 2
        while name in names:
            name, n = f"{proposal.name}-{n}", n + 1
        proposal.name = name
        names.add(name)
        proposals.append(proposal)
    return proposals


def _as_groups(proposals: list[Proposed]) -> list[Group]:
    from workerwatch.config.load import from_data

    data = {
        "groups": [{"name": p.name, "match": _match(p)} for p in proposals if p.problem is None]
    }
    return from_data(data, "<proposal>").groups if data["groups"] else []


def _match(p: Proposed) -> dict[str, str]:
    rules = {}
    if p.unit:
        rules["systemd_unit"] = p.unit
    if p.cmdline:
        rules["cmdline"] = p.cmdline
    return rules


def _selected(proposals: list[Proposed]) -> dict[str, set[int]]:
    """What the collection's discovery selects for each group, all groups at once."""
    found: dict[str, set[int]] = {p.name: set() for p in proposals}
    for worker in discover(_as_groups(proposals)).workers:
        found[worker.group].add(worker.pid)
    return found


def verify(proposals: list[Proposed]) -> None:
    """Tighten each group until the collection's discovery selects exactly its members.

    A unit pattern alone also takes the unit's other processes (a wrapper shell, a helper):
    the members' command lines are added. A loose command line takes a one-off run of the
    same script: the exact command lines replace it. What still differs is a problem,
    said on the group and on stderr.
    """
    for attempt in range(3):
        for p in proposals:  # a member that exited since the survey is no longer one
            p.members = [m for m in p.members if os.path.exists(f"/proc/{m.pid}")]
        found = _selected(proposals)
        wrong = [p for p in proposals if p.problem is None and found[p.name] != _pids(p)]
        if not wrong:
            return
        for p in wrong:
            extra = found[p.name] - _pids(p)
            if attempt == 0 and p.unit and extra:
                keys = sorted({_key_regex(m.argv[0], _script(m.argv)) for m in p.members})
                p.cmdline = keys[0] if len(keys) == 1 else "|".join(f"(?:{k})" for k in keys)
                p.why_cmdline = (
                    f"the unit also runs pid(s) {_list(extra)}, which are not workers: "
                    "the members' command lines, anchored"
                )
            elif attempt <= 1 and extra:
                p.cmdline = _exact_regex(p.members)
                p.why_cmdline = (
                    f"the script alone also matches pid(s) {_list(extra)}: "
                    "the members' exact command lines"
                )
            elif attempt == 2 or not extra:
                missing = _pids(p) - found[p.name]
                p.problem = (
                    f"no match rule selects exactly pids {_list(_pids(p))} "
                    f"(also: {_list(extra) or '-'}, not: {_list(missing) or '-'})"
                )
    found = _selected(proposals)
    for p in proposals:
        if p.problem is None and found[p.name] != _pids(p):
            p.problem = f"the rules select pids {_list(found[p.name])}, not {_list(_pids(p))}"


def _pids(p: Proposed) -> set[int]:
    return {m.pid for m in p.members}


def _list(pids: set[int], limit: int = 12) -> str:
    shown = sorted(pids)
    more = f" and {len(shown) - limit} more" if len(shown) > limit else ""
    return ", ".join(str(pid) for pid in shown[:limit]) + more


def _q(text: str) -> str:
    """A YAML single-quoted scalar."""
    return "'" + text.replace("'", "''") + "'"


def _duration(seconds: float) -> str:
    return f"{int(seconds) // 60}m" if seconds % 60 == 0 else f"{int(seconds)}s"


def sample_waits(workers: list[survey.Seen], seconds: float) -> dict[int, tuple[str, float]]:
    """The longest timed wait of each worker's main thread over ``seconds`` of sampling."""
    longest: dict[int, tuple[str, float]] = {}
    end = time.monotonic() + seconds
    while True:
        for item in workers:
            wait = survey.timed_wait(item.pid)
            best = longest.get(item.pid, ("", 0.5))[1]  # shorter waits say nothing
            if wait is not None and wait[1] > best:
                longest[item.pid] = wait
        if time.monotonic() >= end:
            return longest
        time.sleep(0.1)


def stall_after(p: Proposed, waits: dict[int, tuple[str, float]]) -> tuple[float, str]:
    """Always the shipped default, with what was seen as the reason.

    A wait with a timeout (a long poll's ``poll(..., 70000)``, a backoff sleep) is judged
    ``idle`` from the timeout the kernel shows, whatever ``stall_after`` is, so a long timed
    wait is no reason to wait longer for a hang: the default is what keeps hang-to-incident
    under 5 minutes (docs/alerts.md, the time budget)."""
    default = next(f.default for f in dataclasses.fields(Group) if f.name == "stall_after")
    seen = [(waits[m.pid], m.pid) for m in p.members if m.pid in waits]
    if not seen:
        return default, "no timed wait seen while sampling: the default"
    (call, longest), pid = max(seen, key=lambda s: s[0][1])
    return default, (
        f"longest timed wait seen: {call}() for {human_duration(longest)} (pid {pid}); a wait "
        "with a timeout is idle whatever stall_after is, so the default"
    )


def _logs_lines(p: Proposed) -> list[str]:
    holders: dict[str, set[int]] = {}
    for m in p.members:
        for path in _logs(m):
            holders.setdefault(path, set()).add(m.pid)
    if not holders:
        return ["    # no log held open for writing: the verdict rests on the processes"]
    # Many files of one kind in one directory (worker-0.log, worker-1.log...) become a glob.
    kinds: dict[tuple[str, str], list[str]] = {}
    for path in sorted(holders):
        kinds.setdefault((os.path.dirname(path), os.path.splitext(path)[1]), []).append(path)
    paths: list[str] = []
    globs: set[str] = set()
    for (folder, ext), same in sorted(kinds.items()):
        if len(same) > 3:
            pattern = os.path.join(folder, "*" + ext)
            holders[pattern] = {pid for x in same for pid in holders.pop(x)}
            paths.append(pattern)
            globs.add(pattern)
        else:
            paths.extend(same)
    lines = ["    logs:"]
    for path in paths:
        n = len(holders[path])
        who = (
            f"{n} of {len(p.members)}, one or more files each" if path in globs
            else f"all {n} (one shared file)" if n == len(p.members) and n > 1
            else f"{n} of {len(p.members)}" if n > 1
            else f"pid {next(iter(holders[path]))}"
        )  # fmt: skip
        lines.append(f"      # held open for writing by {who}")
        lines.append(f"      - {_q(path)}")
    return lines


def _heartbeat_pids(folder: str) -> set[int]:
    """The pids of the version-1 heartbeat files in ``folder`` (docs/heartbeat-format.md),
    read as the collection reads them (hostile files: no symlinks, FIFOs, deep JSON)."""
    pattern = os.path.join(glob.escape(folder), "*.json")
    found, _ = heartbeat_files.observe(pattern, time.time())
    return {beat.pid for beat in found if beat.pid is not None}


def _heartbeat_lines(p: Proposed) -> list[str]:
    """Where the members' heartbeat files are: the directory in WORKERWATCH_HEARTBEAT_DIR,
    or a directory named in their command line, holding files written by members."""
    members = _pids(p)
    places: dict[str, str] = {}
    for m in p.members:
        if m.env.get("WORKERWATCH_HEARTBEAT_DIR"):
            places.setdefault(m.env["WORKERWATCH_HEARTBEAT_DIR"], "WORKERWATCH_HEARTBEAT_DIR")
        for arg in m.argv[1:]:
            value = arg.split("=", 1)[-1]
            if value.startswith("/") and os.path.isdir(value) and not _is_system(value + "/"):
                places.setdefault(value, "their command line")
    for folder, source in sorted(places.items()):
        beating = _heartbeat_pids(folder) & members
        if not beating and source != "WORKERWATCH_HEARTBEAT_DIR":
            continue
        return [
            f"  # {folder} (from {source}) holds heartbeat files of {len(beating)} of "
            f"{len(p.members)}" + (f": pids {_list(beating)}" if beating else ""),
            f"  heartbeats: {_q(os.path.join(folder, '*.json'))}",
        ]
    return []


def render_group(p: Proposed, waits: dict[int, tuple[str, float]]) -> list[str]:
    shown = sorted(p.members, key=lambda m: m.pid)
    how = f"systemd template unit {p.unit}" if p.unit else "the same interpreter and script"
    lines = [f"  # {len(shown)} process(es) under {how}: pids {_list(_pids(p))}"]
    for m in shown[:3]:
        unit = f" [{m.unit}]" if m.unit else ""
        lines.append(f"  #   {redact(m.cmdline)[:150]}{unit}")
    if len(shown) > 3:
        lines.append(f"  #   ... and {len(shown) - 3} more")
    prefix = ""
    if p.problem:
        lines.append(f"  # NOT PROPOSED: {p.problem}; write this group's match by hand")
        prefix = "# "
    body = [f"- name: {_q(p.name)}", "  match:"]
    if p.unit:
        body.append("    # each instance of the template unit, from /proc/PID/cgroup")
        body.append(f"    systemd_unit: {_q(p.unit)}")
    if p.cmdline:
        body.append(f"    # {p.why_cmdline}")
        body.append(f"    cmdline: {_q(p.cmdline)}")
    units = {m.unit for m in p.members}
    count = len(units) if p.unit and None not in units else len(p.members)
    body.append(f"  # the {'unit instances' if p.unit else 'processes'} running now")
    body.append(f"  expected: {count}")
    body.extend(line[2:] for line in _logs_lines(p))
    body.extend(_heartbeat_lines(p))
    seconds, why = stall_after(p, waits)
    body.append(f"  # {why}")
    body.append(f"  stall_after: {_duration(seconds)}")
    return lines + [f"  {prefix}{line}" for line in body]


@record
class AwsSeen:
    region: str | None = None
    region_from: str = ""
    endpoint: str | None = None
    endpoint_from: str = ""
    queues: list[str] = field(default_factory=list)
    connected: list[str] = field(default_factory=list)


def _peers_of(url: str) -> set[tuple[str, int]]:
    """The (address, port) pairs a connection to ``url`` would have as its peer."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = parts.hostname or ""
    except ValueError:
        return set()
    try:
        return {(info[4][0], port) for info in socket.getaddrinfo(host, port, type=1)}
    except OSError:
        return set()


def infer_aws(workers: list[survey.Seen], service: str, named: bool = False) -> AwsSeen:
    """Region and endpoint of ``service`` (swf, sqs) from what the workers show.

    A peer's reverse DNS says nothing reliable about the service, so only what is written
    down counts: the environment's region and endpoint variables, and service URLs in the
    command line or environment; an established connection to such an endpoint's host and
    port confirms it. With ``named`` (the operator named the service's domains or queues),
    any URL in a worker's command line that it is connected to counts as the endpoint.
    """
    seen = AwsSeen()
    variable = f"AWS_ENDPOINT_URL_{service.upper()}"
    for m in workers:
        for key in ("AWS_REGION", "AWS_DEFAULT_REGION"):
            if m.env.get(key) and seen.region is None:
                seen.region, seen.region_from = m.env[key], f"{key} in pid {m.pid}'s environment"
        for key in (variable, "AWS_ENDPOINT_URL"):
            if m.env.get(key) and seen.endpoint is None:
                seen.endpoint, seen.endpoint_from = m.env[key], f"{key} of pid {m.pid}"
        for url in m.urls:
            host = urlsplit(url).hostname or ""
            aws = _AWS_HOST.match(host)
            queue_host = _QUEUE_HOST.match(host)
            if service == "sqs" and (queue_host or (aws and aws.group(1) == "sqs")):
                path = urlsplit(url).path.strip("/").split("/")
                if len(path) == 2 and redact(url) not in seen.queues:
                    seen.queues.append(redact(url))
                region = queue_host.group(1) if queue_host else aws.group(2)  # type: ignore[union-attr]
                if seen.region is None:
                    seen.region, seen.region_from = region, f"the host of {redact(url)}"
            elif service == "swf" and aws and aws.group(1) == "swf":
                if seen.region is None:
                    seen.region, seen.region_from = aws.group(2), f"the host of {redact(url)}"
                if seen.endpoint is None:
                    seen.endpoint = f"{urlsplit(url).scheme}://{urlsplit(url).netloc}"
                    seen.endpoint_from = f"pid {m.pid}'s command line or environment"
    if seen.endpoint is None and named:
        for m in workers:
            for url in m.urls:
                if _peers_of(url) & set(m.peers):
                    seen.endpoint = f"{urlsplit(url).scheme}://{urlsplit(url).netloc}"
                    seen.endpoint_from = f"a URL in pid {m.pid}'s command line or environment"
                    break
            if seen.endpoint:
                break
    if seen.endpoint:
        addresses = _peers_of(seen.endpoint)
        for m in workers:
            if addresses & set(m.peers):
                seen.connected.append(str(m.pid))
    return seen


def _aws_lines(workers: list[survey.Seen], ns: argparse.Namespace) -> list[str]:
    lines: list[str] = []
    domains = list(ns.swf_domain or [])
    swf = infer_aws(workers, "swf", named=bool(domains))
    sqs = infer_aws(workers, "sqs", named=bool(ns.sqs_queue))
    if domains or (swf.endpoint and "swf" in (swf.endpoint or "")) or swf.connected:
        lines += _section("swf", swf, domains=domains)
    queues = list(dict.fromkeys([*sqs.queues, *(ns.sqs_queue or [])]))
    if queues:
        lines += _section("sqs", sqs, queues=queues)
    if not lines:
        lines = [
            "# No SWF or SQS endpoint is written in the workers' command lines or environment:",
            "# add swf: / sqs: sections by hand (or rerun with --swf-domain / --sqs-queue).",
        ]
        connected = sorted(
            {redact(u) for m in workers for u in m.urls if _peers_of(u) & set(m.peers)}
        )
        if connected:
            lines.append(f"# The workers are connected to {', '.join(connected[:5])}, named in")
            lines.append("# their command lines: if that is SWF or SQS, the options above use it.")
    return lines


def _section(
    service: str, seen: AwsSeen, domains: list[str] | None = None, queues: list[str] | None = None
) -> list[str]:
    out = [f"{service}:"]
    if seen.region:
        out.append(f"  # from {seen.region_from}")
        out.append(f"  region: {_q(seen.region)}")
    else:
        out.append(f"  # no region visible in the workers' environment: the default, {AWS_REGION}")
    if seen.endpoint:
        connected = (
            f"; pid(s) {', '.join(seen.connected)} connected to it now" if seen.connected else ""
        )
        out.append(f"  # from {seen.endpoint_from}{connected}")
        out.append(f"  endpoint_url: {_q(redact(seen.endpoint))}")
    if service == "swf":
        if domains:
            out.append("  # given with --swf-domain (domain names are not visible on the host)")
            out.append("  domains:")
            for name in domains:
                out.append(f"    - name: {_q(name)}")
            out.append("      # task lists are not visible either: add activity_task_lists")
        else:
            return [
                "# SWF endpoint seen, but domain names are not visible on the host: rerun",
                "# with --swf-domain NAME, or uncomment and complete:",
                *("# " + line for line in out),
                "#   domains:",
                "#     - name: DOMAIN",
            ]
    else:
        out.append("  # queue URLs written in the workers' command lines or environment")
        out.append("  queues:")
        out.extend(f"    - {_q(q)}" for q in queues or [])
    return out


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
        lines.append(f"state_dir: {_q(ns.state_dir)}")
    usable = [p for p in proposals if p.problem is None]
    if not usable:
        return "", proposals
    lines.append("groups:")
    for p in proposals:
        lines.extend(render_group(p, waits))
    lines.extend(_aws_lines([m for p in usable for m in p.members], ns))
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
        f"      - {_q(sys.executable)}\n"
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
