"""Command line: the one-shot collection the agent runs, plus operator subcommands.

This module parses the program's global flags (those of the one-shot collection, which is
what runs without a subcommand) and dispatches. Subcommands are imported only when used, so
the agent's one-shot path never pays for requests, boto3 or the alert tooling; no command
imports this module back.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from workerwatch.commands import common

# name -> "module:function"; each function takes argv (after the subcommand) and returns
# the exit code.
SUBCOMMANDS: dict[str, str] = {
    "check-config": "workerwatch.commands.check_config:main",
    "run": "workerwatch.commands.run:main",
    "push": "workerwatch.commands.push:main",
    "status": "workerwatch.commands.status:main",
    "diagnose": "workerwatch.commands.diagnose:main",
    "discover": "workerwatch.commands.discover:main",
    "alerts": "workerwatch.alerts.cli:alerts_main",
    "dashboards": "workerwatch.alerts.cli:dashboards_main",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nri-workerwatch",
        description="Report per-worker stall verdicts as New Relic protocol-v4 metrics.",
        epilog="subcommands: " + ", ".join(SUBCOMMANDS),
    )
    common.add_common_flags(parser)
    common.add_data_flags(parser, ("metrics", "inventory", "events", "pretty", "show_version"))
    return parser


def split_subcommand(argv: list[str]) -> tuple[list[str], str, list[str]] | None:
    """(global flags before it, subcommand, its own arguments), or None without one.

    A subcommand name that is the value of a flag (``-config status``) is not one.
    """
    parser = build_parser()
    takes_value = {s for a in parser._actions if a.nargs != 0 for s in a.option_strings}
    index = 0
    while index < len(argv):
        word = argv[index]
        if word in SUBCOMMANDS:
            return argv[:index], word, argv[index + 1 :]
        if not word.startswith("-"):
            return None  # a stray argument: the global parser says what is wrong
        index += 2 if word in takes_value else 1
    return None


def as_subcommand_flags(before: list[str]) -> list[str]:
    """Global flags given before a subcommand, as ``--name [value]`` for the subcommand's
    own parser (every subcommand spells its flags with two dashes; ``-verbose`` is the Go
    SDK's spelling, which only the global parser takes)."""
    ns = build_parser().parse_args(before)  # a bad flag ends here, with the usage
    out: list[str] = []
    for name, value in vars(ns).items():
        if value is True:
            out.append(f"--{name}")
        elif isinstance(value, str):
            out.extend((f"--{name}", value))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = split_subcommand(argv)
    if split is not None:
        before, name, rest = split
        module_name, func_name = SUBCOMMANDS[name].split(":")
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(as_subcommand_flags(before) + rest) or 0)
    ns = common.resolve_flags(build_parser().parse_args(argv))
    from workerwatch.commands import collect

    return collect.main(ns)


if __name__ == "__main__":
    raise SystemExit(main())
