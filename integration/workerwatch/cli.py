"""Command line: the one-shot collection the agent runs, plus operator subcommands.

Flags follow the Go SDK (``-metrics -inventory -events -pretty -verbose -show_version``,
``--x`` spellings accepted, env ``METRICS=true`` etc. applied first and overridden by
flags). Subcommands are imported only when used, so the agent's one-shot path never pays
for requests, boto3 or the alert tooling.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
from collections.abc import Sequence

from workerwatch import INTEGRATION_NAME, __version__, log

# name -> "module:function"; each function takes argv (after the subcommand) and returns
# the exit code.
SUBCOMMANDS: dict[str, str] = {
    "check-config": "workerwatch.cli:check_config_main",
    "run": "workerwatch.longrun:main",
    "push": "workerwatch.push:main",
    "status": "workerwatch.status:main",
    "diagnose": "workerwatch.diagnose:main",
    "alerts": "workerwatch.alerts.cli:alerts_main",
    "dashboards": "workerwatch.alerts.cli:dashboards_main",
}

_TRUE = {"1", "true", "yes", "on"}
_BOOL_FLAGS = ("metrics", "inventory", "events", "pretty", "verbose", "show_version")


def _env_true(env: dict[str, str], name: str) -> bool:
    return env.get(name.upper(), "").strip().lower() in _TRUE


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by every command that collects: config location, state and verbosity."""
    parser.add_argument("-config", "--config", dest="config", default=None, help="config file")
    parser.add_argument(
        "-state_dir", "--state_dir", "--state-dir", dest="state_dir", default=None,
        help="override the config's state_dir",
    )  # fmt: skip
    parser.add_argument("-verbose", "--verbose", action="store_true", default=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nri-workerwatch",
        description="Report per-worker stall verdicts as New Relic protocol-v4 metrics.",
        epilog="subcommands: " + ", ".join(SUBCOMMANDS),
    )
    add_common_flags(parser)
    for name in ("metrics", "inventory", "events", "pretty", "show_version"):
        spellings = [f"-{name}", f"--{name}"]
        if "_" in name:
            spellings.append(f"--{name.replace('_', '-')}")
        parser.add_argument(*spellings, dest=name, action="store_true", default=None)
    return parser


def resolve_flags(ns: argparse.Namespace, env: dict[str, str] | None = None) -> argparse.Namespace:
    """Env first, flags override: the Go SDK's ``args.SetupArgs`` order."""
    env = dict(os.environ) if env is None else env
    for name in _BOOL_FLAGS:
        if getattr(ns, name, None) is None:
            setattr(ns, name, _env_true(env, name))
    return ns


def version_line() -> str:
    """The version, and the versions of the compiled dependencies: importing them here makes
    ``-show_version`` an install check, failing at once for a build made for another Python
    or platform rather than at the first config validation."""
    import psutil  # loads psutil._psutil_linux
    import pydantic_core  # loads pydantic_core._pydantic_core

    return (
        f"New Relic {INTEGRATION_NAME} integration Version: {__version__}, "
        f"Platform: {sys.platform}/{platform.machine()}, Python: {platform.python_version()}, "
        f"psutil: {psutil.__version__}, pydantic-core: {pydantic_core.__version__}"
    )


def load_config_or_exit(config_path: str | None, state_dir: str | None = None):
    """Load and validate the config; on any problem print one [FATAL] line and exit 1."""
    from workerwatch.config import ConfigError, load, locate

    try:
        config = load(locate(config_path))
    except ConfigError as exc:
        log.fatal(str(exc))
        raise SystemExit(1) from None
    if state_dir:
        config = config.model_copy(update={"state_dir": state_dir})
    return config


def check_config_main(argv: Sequence[str]) -> int:
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


def collect_main(argv: Sequence[str]) -> int:
    ns = resolve_flags(build_parser().parse_args(list(argv)))
    log.set_verbose(ns.verbose)
    if ns.show_version:
        try:
            print(version_line())
        except ImportError as exc:
            python = platform.python_version()
            log.fatal(f"a compiled dependency does not load under Python {python}: {exc}")
            return 1
        return 0
    config = load_config_or_exit(ns.config, ns.state_dir)

    from workerwatch.collect import Collector
    from workerwatch.emit import Sections, to_line
    from workerwatch.state import FileStateStore

    with FileStateStore(config.state_dir) as store:
        result = Collector(config).collect(store)
    sections = Sections.from_flags(ns.metrics, ns.inventory, ns.events)
    sys.stdout.write(to_line(result, config, sections, pretty=ns.pretty))
    sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        module_name, func_name = SUBCOMMANDS[argv[0]].split(":")
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(argv[1:]) or 0)
    return collect_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
