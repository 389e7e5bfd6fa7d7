"""Operator status: ``nri-workerwatch status [--watch [SECONDS]] [--json]``.

One table per group: state, reason, log silence, heartbeat age, task and its running
time, blocked syscall and peer, CPU, pid, uptime; then backlog lines. It replaces the
``ps`` / ``tail`` / ``journalctl`` round of an incident.

Status must not disturb the agent's state, so it runs its own collection on an in-memory
copy: it reads the state file (without its lock: the file is only ever replaced by an
atomic rename, so a reader sees the old or the new one whole) to get the agent's history
("silent since", the log offsets of the last run), and never writes it back. Had it
saved, the agent's next run would compute its deltas against status's moment instead of
its own previous run, and a ``status --watch`` would hold the lock the agent waits for.
With ``--watch`` the later refreshes use status's own in-memory history.

Where the config comes from, for an operator who has no ``CONFIG_PATH``: ``--config``,
``CONFIG_PATH``, ``WORKERWATCH_CONFIG``, else the inline ``config:`` of the first
nri-workerwatch entry in the agent's ``/etc/newrelic-infra/integrations.d/*.yml``
(``commands.common.load_operator_config``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from workerwatch import INTEGRATION_NAME, log
from workerwatch.commands.common import add_operator_flags, load_operator_config, read_only_store
from workerwatch.units import human_duration, parse_duration

# ANSI colours by state; only on a terminal, and never with NO_COLOR set.
_COLOURS = {"stalled": "1;31", "gone": "31", "unknown": "33", "working": "32", "idle": "36"}


# --- collection ----------------------------------------------------------------------


def verdict_dict(v: Any, now: float) -> dict[str, Any]:
    out = asdict(v)
    out["stalled"] = v.stalled
    out["uptime_seconds"] = round(now - v.started, 1) if v.started else None
    return out


def snapshot(result: Any, config: Any, state_file: dict[str, Any]) -> dict[str, Any]:
    """Everything the table shows, as plain data (the --json document)."""
    now = result.now
    groups = []
    for g in result.groups:
        groups.append(
            {
                "group": g.group,
                "running": g.running,
                "pool_processes": g.pool_processes,
                "expected": g.expected,
                "stalled": g.stalled,
                "missing": g.missing,
                "reason": g.reason,
                "workers": [verdict_dict(v, now) for v in result.workers if v.group == g.group],
            }
        )
    return {
        "host": socket.gethostname(),
        "time": now,
        "duration_seconds": round(result.duration, 4),
        "state_file": state_file,
        "groups": groups,
        "backlog": [
            {"name": s.name, "value": s.value, "attributes": dict(s.attributes)}
            for s in result.backlog
        ],
        "errors": dict(result.errors),
        "events": result.events,
    }


# --- rendering -----------------------------------------------------------------------


def _dur(seconds: float | None) -> str:
    return "-" if seconds is None else human_duration(seconds)


def _cells(w: dict[str, Any]) -> list[str]:
    task = "-"
    if w["task_name"]:
        task = w["task_name"] + (f" {_dur(w['task_seconds'])}" if w["task_seconds"] else "")
    blocked = "-"
    if w["blocked_syscall"] and w["blocked_seconds"]:
        peer = f" {w['blocked_peer']}" if w["blocked_peer"] else ""
        blocked = f"{w['blocked_syscall']}{peer} {_dur(w['blocked_seconds'])}"
    cpu = f"+{w['cpu_delta']:.2f}s" if w["cpu_delta"] is not None else "-"
    return [
        w["name"],
        w["state"],
        str(w["pid"]),
        _dur(w["uptime_seconds"]) if w["up"] else "-",
        _dur(w["silent_seconds"]),
        _dur(w["heartbeat_age"]),
        task,
        blocked,
        cpu,
    ]


HEADERS = ["WORKER", "STATE", "PID", "UPTIME", "LOG SILENT", "HEARTBEAT", "TASK", "BLOCKED", "CPU"]


def render(doc: dict[str, Any], colour: bool = False, width: int | None = None) -> str:
    """The human table; reasons on their own indented line, cut to ``width`` columns only
    when given (a terminal): piped into a file, grep or a ticket, they stay whole."""

    def paint(text: str, state: str) -> str:
        code = _COLOURS.get(state)
        return f"\x1b[{code}m{text}\x1b[0m" if colour and code else text

    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(doc["time"]))
    lines = [f"{INTEGRATION_NAME} status on {doc['host']} at {when}"]
    source = doc["state_file"]
    history = "history from the state file" if source.get("read") else "no history yet"
    lines.append(f"({history}: {source.get('path')}; collection {doc['duration_seconds']:.2f}s)")
    for g in doc["groups"]:
        lines.append("")
        lines.append(paint(f"group {g['group']}: {g['reason']}", "stalled" if g["stalled"] else ""))
        rows = [_cells(w) for w in g["workers"]]
        if not rows:
            lines.append("  (no workers found)")
            continue
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]
        lines.append("  " + "  ".join(h.ljust(widths[i]) for i, h in enumerate(HEADERS)).rstrip())
        for index, w in enumerate(g["workers"]):  # rows[index] is this worker's (built above)
            text = "  ".join(c.ljust(widths[i]) for i, c in enumerate(rows[index])).rstrip()
            lines.append("  " + paint(text, w["state"]))
            if w["reason"]:
                reason = w["reason"]
                limit = max(40, width - 6) if width else len(reason)
                lines.append(
                    "      " + (reason if len(reason) <= limit else reason[: limit - 1] + "…")
                )
    if doc["backlog"]:
        lines.append("")
        lines.append("backlog:")
        for b in doc["backlog"]:
            attrs = " ".join(f"{k}={v}" for k, v in sorted(b["attributes"].items()))
            lines.append(f"  {b['name']} = {b['value']:g}  {attrs}".rstrip())
    errors = {k: v for k, v in doc["errors"].items() if v}
    if errors:
        lines.append("")
        lines.append("probe errors: " + ", ".join(f"{k}={v}" for k, v in sorted(errors.items())))
    return "\n".join(lines) + "\n"


def use_colour(stream: Any, flag: bool | None = None) -> bool:
    if flag is not None:
        return flag
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


# --- command -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nri-workerwatch status",
        description="Show every worker's verdict and evidence now (does not change the state).",
    )
    add_operator_flags(parser)
    parser.add_argument(
        "--watch", nargs="?", const="2s", default=None, metavar="SECONDS",
        help="refresh every SECONDS (default 2s) until Ctrl-C",
    )  # fmt: skip
    parser.add_argument(
        "--count", type=int, default=0, help="with --watch: stop after this many refreshes"
    )
    parser.add_argument(
        "--json", action="store_true", help="JSON for scripts (one line per refresh with --watch)"
    )
    parser.add_argument(
        "--color", "--colour", dest="colour", choices=("auto", "always", "never"), default="auto"
    )
    return parser


def main(argv: Sequence[str]) -> int:
    ns = build_parser().parse_args(list(argv))
    log.set_verbose(bool(ns.verbose))
    every = None
    if ns.watch is not None:
        try:
            every = parse_duration(ns.watch)
        except ValueError as exc:
            log.fatal(f"--watch: {exc}")
            return 1
    config = load_operator_config(ns)

    from workerwatch.collector import Collector

    collector = Collector(config, resident=every is not None)
    store = read_only_store(config.state_dir)
    with store:
        read = os.path.exists(store.path) and not store.problems
    state_file = {"path": store.path, "read": read}
    colour = use_colour(sys.stdout, {"always": True, "never": False}.get(ns.colour))
    clear = colour and every is not None
    refreshes = 0
    try:
        while True:
            result = collector.collect(store)
            doc = snapshot(result, config, state_file)
            if ns.json:
                if every is None:
                    out = json.dumps(doc, indent=2, allow_nan=False, default=str) + "\n"
                else:
                    out = (
                        json.dumps(doc, separators=(",", ":"), allow_nan=False, default=str) + "\n"
                    )
            else:
                width = None
                if sys.stdout.isatty():
                    with contextlib.suppress(OSError):
                        width = os.get_terminal_size(sys.stdout.fileno()).columns
                out = render(doc, colour, width)
                if clear:
                    out = "\x1b[H\x1b[2J" + out
                elif every is not None and refreshes:
                    out = "\n" + out
            sys.stdout.write(out)
            sys.stdout.flush()
            refreshes += 1
            state_file = {
                "path": store.path,
                "read": True,
                "note": "in-memory history from the previous refresh",
            }
            if every is None or (ns.count and refreshes >= ns.count):
                return 0
            time.sleep(every)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the exit flush
        return 0
    finally:
        collector.close()
