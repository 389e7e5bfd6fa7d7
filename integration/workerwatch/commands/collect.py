"""The one-shot collection the agent runs every interval: one payload, then exit.

``cli`` parses its flags (they are the program's global ones) and calls :func:`main`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from workerwatch import log
from workerwatch.commands.common import load_config_or_exit, version_line

if TYPE_CHECKING:
    import argparse


def main(ns: argparse.Namespace) -> int:
    log.set_verbose(ns.verbose)
    if ns.show_version:
        try:
            print(version_line())
        except ImportError as exc:
            python = sys.version.split()[0]
            log.fatal(f"a compiled dependency does not load under Python {python}: {exc}")
            return 1
        return 0
    config = load_config_or_exit(ns.config, ns.state_dir)

    from workerwatch.collector import Collector
    from workerwatch.output.v4 import Sections, to_line
    from workerwatch.state import FileStateStore

    with FileStateStore(config.state_dir) as store:
        result = Collector(config).collect(store)
    sections = Sections.from_flags(ns.metrics, ns.inventory, ns.events)
    line = to_line(result, config, sections, pretty=ns.pretty)
    try:
        if sys.stdout is None:  # started with fd 1 closed
            raise OSError("no stdout")
        sys.stdout.write(line)
        sys.stdout.flush()
    except (OSError, ValueError) as exc:
        # The reader went away (EPIPE), the device is full, stdout is closed: the state is
        # saved, only this run's payload is lost. One line saying so, not a traceback.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        log.error(f"payload not written to stdout ({reason}): this run's data is lost")
        return 1
    return 0
