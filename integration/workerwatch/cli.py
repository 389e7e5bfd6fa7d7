"""Command line: the one-shot collection the agent runs, plus operator subcommands.

This module parses the program's global flags (those of the one-shot collection, which is
what runs without a subcommand) and dispatches. Subcommands are imported only when used, so
the agent's one-shot path never pays for requests, boto3 or the alert tooling; no command
imports this module back.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import sys
from collections.abc import Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

# ``workerwatch.commands.common`` (and through it the config and records machinery) is
# imported in the functions below, not here: ``main`` turns the cyclic GC off first, which
# spares the ~15 collections those imports would trigger (~1.7 ms of every one-shot).

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
    import argparse

    from workerwatch.commands import common

    parser = argparse.ArgumentParser(
        prog="nri-workerwatch",
        description="Report per-worker stall verdicts as New Relic protocol-v4 metrics.",
        epilog="subcommands: " + ", ".join(SUBCOMMANDS),
    )
    common.add_common_flags(parser)
    common.add_data_flags(parser, common.DATA_FLAGS)
    return parser


def quick_flags(argv: list[str]) -> Any:
    """The global flags read as ``build_parser`` reads them, for their plain spellings only
    (``-config PATH``, ``--config=PATH``, ``-metrics``...); None for anything else, which
    ``build_parser`` then reads, with its errors and help.

    The agent runs the one-shot with these flags or none every 15-30 s: building the
    argparse parser (argparse, gettext, locale, shutil) cost about 5 ms of each run.
    """
    from workerwatch.commands import common

    takes_value = {s: dest for spellings, dest, _ in common.VALUE_FLAGS for s in spellings}
    switches = {
        s: name
        for name in ("verbose", *common.DATA_FLAGS)
        for s in common.data_flag_spellings(name)
    }
    values: dict[str, Any] = dict.fromkeys((*takes_value.values(), *switches.values()))
    index = 0
    while index < len(argv):
        word = argv[index]
        if word in switches:
            values[switches[word]] = True
            index += 1
        elif word in takes_value:
            # argparse takes a following word that looks like a flag for one: let it say so.
            if index + 1 == len(argv) or argv[index + 1].startswith("-"):
                return None
            values[takes_value[word]] = argv[index + 1]
            index += 2
        elif word.partition("=")[0] in takes_value and word.partition("=")[2]:
            name, _, value = word.partition("=")
            values[takes_value[name]] = value
            index += 1
        else:
            return None
    return SimpleNamespace(**values)


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
    collecting = gc.isenabled()
    gc.disable()  # through the imports; the one-shot keeps it off (see _one_shot)
    from workerwatch.commands import common

    quick = quick_flags(argv)
    if quick is not None:  # only global flags: the one-shot
        return _one_shot(common.resolve_flags(quick))
    if collecting:
        gc.enable()  # a subcommand may be a resident process: the usual collector
    split = split_subcommand(argv)
    if split is not None:
        before, name, rest = split
        module_name, func_name = SUBCOMMANDS[name].split(":")
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(as_subcommand_flags(before) + rest) or 0)
    return _one_shot(common.resolve_flags(build_parser().parse_args(argv)))


def entry() -> None:
    """The program's entry point (console script, zipapp, ``python -m workerwatch``).

    After a one-shot, which has written its payload and saved its state, the process ends
    at once: the interpreter's teardown (freeing every object, a last garbage collection)
    was ~10 ms of a 200-worker run, every 15-30 s. Other commands exit as usual.
    """
    code = main()
    if _one_shot_done:
        # Each on its own: a stdout that cannot be flushed must not keep stderr's last
        # lines back; either may be None (started with that fd closed).
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                stream.flush()
        os._exit(code)
    sys.exit(code)


_one_shot_done = False


def _one_shot(ns: Any) -> int:
    # A one-shot run lives for a fraction of a second and leaves no garbage cycles worth
    # collecting: the collector's passes over every object cost CPU (and, in the forked
    # host-phase child, copy-on-write page faults) and free nothing the exit would not.
    gc.disable()
    from workerwatch.commands import collect

    global _one_shot_done
    code = collect.main(ns)
    _one_shot_done = True
    return code


if __name__ == "__main__":
    entry()
