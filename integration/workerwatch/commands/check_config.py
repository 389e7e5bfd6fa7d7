"""``nri-workerwatch check-config``: validate a configuration without collecting.

The file comes from ``--config`` / ``CONFIG_PATH`` / ``WORKERWATCH_CONFIG``; else every
inline ``config:`` of an nri-workerwatch entry in ``--agent-config FILE|DIR`` (default the
agent's integrations.d), each checked on its own, as the agent would run each one.

A valid config can still watch nothing: a ``cmdline`` that matches no process, a ``logs``
glob that matches no file. Those are said as one ``[WARN]`` line each (exit 0: the workers
may simply not be running at this moment), from the process table and files as they are now.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import os
from collections.abc import Sequence

from workerwatch import log
from workerwatch.commands.common import add_operator_flags, load_config_or_exit
from workerwatch.config import Config, ConfigError, Group, Match, parse
from workerwatch.config.agent import AGENT_CONFIG_DIR, agent_files, as_text, read_entries

RULES = ("cmdline", "systemd_unit", "pidfile")


def summary(config: Config) -> str:
    groups = ", ".join(g.name for g in config.groups)
    extras = [name for name in ("swf", "sqs") if getattr(config, name) is not None]
    backlog = f"; backlog probes: {', '.join(extras)}" if extras else ""
    return f"{len(config.groups)} group(s): {groups}{backlog}"


def _running(group: Group) -> int:
    from workerwatch.host.discover import discover

    return len(discover([group]).workers)


def no_match_warnings(config: Config) -> list[str]:
    """One line per rule, glob or group that finds nothing on this host right now."""
    out = []
    for group in config.groups:
        given = [(r, getattr(group.match, r)) for r in RULES if getattr(group.match, r)]
        silent = []
        for rule, value in given:
            alone = dataclasses.replace(group, match=Match(**{rule: value}))
            if not _running(alone):
                silent.append(rule)
                out.append(f"group {group.name}: match.{rule} '{value}' matches no running process")
        if len(given) > 1 and not silent and not _running(group):
            rules = " and ".join(f"match.{r}" for r, _ in given)
            out.append(f"group {group.name}: no running process satisfies {rules} together")
        for pattern in group.logs or ():
            if not glob.glob(pattern):
                out.append(f"group {group.name}: logs '{pattern}' matches no file")
        if group.heartbeats and not glob.glob(group.heartbeats):
            out.append(f"group {group.name}: heartbeats '{group.heartbeats}' matches no file")
    return out


def _warn_no_match(config: Config, prefix: str = "") -> None:
    for line in no_match_warnings(config):
        log.warn(prefix + line)


def _check_agent_config(source: str) -> int:
    """Every inline nri-workerwatch config in the agent's file(s): one line each."""
    found = bad = 0
    for path in agent_files(source):
        try:
            entries = read_entries(path)
        except ConfigError as exc:
            log.fatal(str(exc))
            bad += 1
            continue
        for label, inline in entries:
            found += 1
            try:
                config = parse(as_text(inline), label)
            except ConfigError as exc:
                log.fatal(str(exc))
                bad += 1
                continue
            print(f"config OK: {label}: {summary(config)}")
            _warn_no_match(config, f"{label}: ")
    if not found and not bad:
        log.fatal(f"no nri-workerwatch entry with an inline config: in {source}")
        return 1
    return 1 if bad else 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="nri-workerwatch check-config",
        description="Validate the configuration; warn about rules and globs that find nothing.",
    )
    add_operator_flags(parser)
    ns = parser.parse_args(list(argv))
    log.set_verbose(bool(ns.verbose))
    # A flag wins over the environment; without either, the agent's own files.
    from_env = os.environ.get("CONFIG_PATH") or os.environ.get("WORKERWATCH_CONFIG")
    if not ns.config and (ns.agent_config or not from_env):
        return _check_agent_config(ns.agent_config or AGENT_CONFIG_DIR)
    config = load_config_or_exit(ns.config)
    print(f"config OK: {summary(config)}")
    _warn_no_match(config)
    return 0
