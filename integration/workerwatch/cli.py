"""Command line: the one-shot collection the agent runs, plus operator subcommands.

This module parses the program's global flags (those of the one-shot collection, which is
what runs without a subcommand) and dispatches. Subcommands are imported only when used, so
the agent's one-shot path never pays for requests, boto3 or the alert tooling; no command
imports this module back.
"""

from __future__ import annotations

import argparse
import gc
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        module_name, func_name = SUBCOMMANDS[argv[0]].split(":")
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(argv[1:]) or 0)
    ns = common.resolve_flags(build_parser().parse_args(argv))
    # A one-shot run lives for a fraction of a second and leaves no garbage cycles worth
    # collecting: the collector's passes over every object cost CPU (and, in the forked
    # host-phase child, copy-on-write page faults) and free nothing the exit would not.
    gc.disable()
    from workerwatch.commands import collect

    return collect.main(ns)


if __name__ == "__main__":
    raise SystemExit(main())
