"""How a proposed group is written: its match rules, logs, heartbeats and stall_after."""

from __future__ import annotations

import dataclasses
import glob
import os
import time

from workerwatch.commands.discover.grouping import (
    Proposed,
    is_system,
    log_paths,
    member_pids,
    pid_list,
)
from workerwatch.config.model import Group
from workerwatch.host import heartbeat_files, survey
from workerwatch.sanitize import redact
from workerwatch.units import human_duration


def yaml_quote(text: str) -> str:
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
        for path in log_paths(m):
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
        lines.append(f"      - {yaml_quote(path)}")
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
    members = member_pids(p)
    places: dict[str, str] = {}
    for m in p.members:
        if m.env.get("WORKERWATCH_HEARTBEAT_DIR"):
            places.setdefault(m.env["WORKERWATCH_HEARTBEAT_DIR"], "WORKERWATCH_HEARTBEAT_DIR")
        for arg in m.argv[1:]:
            value = arg.split("=", 1)[-1]
            if value.startswith("/") and os.path.isdir(value) and not is_system(value + "/"):
                places.setdefault(value, "their command line")
    for folder, source in sorted(places.items()):
        beating = _heartbeat_pids(folder) & members
        if not beating and source != "WORKERWATCH_HEARTBEAT_DIR":
            continue
        return [
            f"  # {folder} (from {source}) holds heartbeat files of {len(beating)} of "
            f"{len(p.members)}" + (f": pids {pid_list(beating)}" if beating else ""),
            f"  heartbeats: {yaml_quote(os.path.join(folder, '*.json'))}",
        ]
    return []


def render_group(p: Proposed, waits: dict[int, tuple[str, float]]) -> list[str]:
    shown = sorted(p.members, key=lambda m: m.pid)
    how = f"systemd template unit {p.unit}" if p.unit else "the same interpreter and script"
    lines = [f"  # {len(shown)} process(es) under {how}: pids {pid_list(member_pids(p))}"]
    for m in shown[:3]:
        unit = f" [{m.unit}]" if m.unit else ""
        lines.append(f"  #   {redact(m.cmdline)[:150]}{unit}")
    if len(shown) > 3:
        lines.append(f"  #   ... and {len(shown) - 3} more")
    prefix = ""
    if p.problem:
        lines.append(f"  # NOT PROPOSED: {p.problem}; write this group's match by hand")
        prefix = "# "
    body = [f"- name: {yaml_quote(p.name)}", "  match:"]
    if p.unit:
        body.append("    # each instance of the template unit, from /proc/PID/cgroup")
        body.append(f"    systemd_unit: {yaml_quote(p.unit)}")
    if p.cmdline:
        body.append(f"    # {p.why_cmdline}")
        body.append(f"    cmdline: {yaml_quote(p.cmdline)}")
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
