"""``nri-workerwatch check-config``: validate a configuration file without collecting."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from workerwatch.commands.common import add_common_flags, load_config_or_exit


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="nri-workerwatch check-config")
    add_common_flags(parser)
    ns = parser.parse_args(list(argv))
    config = load_config_or_exit(ns.config)
    groups = ", ".join(g.name for g in config.groups)
    extras = [name for name in ("swf", "sqs") if getattr(config, name) is not None]
    print(f"config OK: {len(config.groups)} group(s): {groups}" + (
        f"; backlog probes: {', '.join(extras)}" if extras else ""
    ))  # fmt: skip
    return 0
