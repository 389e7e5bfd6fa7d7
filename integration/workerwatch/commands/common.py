"""What the commands share: their common flags, and loading the config or exiting.

Flags follow the Go SDK (``-metrics -inventory -events -pretty -verbose -show_version``,
``--x`` spellings accepted, env ``METRICS=true`` etc. applied first and overridden by
flags).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import TYPE_CHECKING, Any

from workerwatch import INTEGRATION_NAME, __version__, log
from workerwatch.config import Config, ConfigError, load, locate, parse
from workerwatch.config.agent import AGENT_CONFIG_DIR, inline_config

if TYPE_CHECKING:
    import argparse

_TRUE = {"1", "true", "yes", "on"}
# The Go SDK's boolean data flags of the top-level command; with -verbose, every boolean
# flag the environment can set (``resolve_flags``).
DATA_FLAGS = ("metrics", "inventory", "events", "pretty", "show_version")
_BOOL_FLAGS = (*DATA_FLAGS, "verbose")

# The flags every collecting command shares: (spellings, dest, help), each taking a value;
# plus -verbose. Kept as data so the one-shot can read them without argparse (cli.py).
VALUE_FLAGS = (
    (("-config", "--config"), "config", "config file"),
    (("-state_dir", "--state_dir", "--state-dir"), "state_dir", "override the config's state_dir"),
)


def data_flag_spellings(name: str) -> tuple[str, ...]:
    """``-metrics --metrics``; ``-show_version --show_version --show-version``."""
    spellings = (f"-{name}", f"--{name}")
    return (*spellings, f"--{name.replace('_', '-')}") if "_" in name else spellings


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by every command that collects: config location, state and verbosity."""
    for spellings, dest, text in VALUE_FLAGS:
        parser.add_argument(*spellings, dest=dest, default=None, help=text)
    add_data_flags(parser, ("verbose",))


def add_data_flags(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    """Boolean Go SDK flags (``-metrics``, ``--show-version``...), None when not given."""
    for name in names:
        parser.add_argument(
            *data_flag_spellings(name), dest=name, action="store_true", default=None
        )


def resolve_flags(ns: argparse.Namespace, env: dict[str, str] | None = None) -> argparse.Namespace:
    """Env first, flags override: the Go SDK's ``args.SetupArgs`` order."""
    env = dict(os.environ) if env is None else env
    for name in _BOOL_FLAGS:
        if getattr(ns, name, None) is None:
            setattr(ns, name, env.get(name.upper(), "").strip().lower() in _TRUE)
    return ns


def version_line() -> str:
    """The version, and the versions of the compiled dependencies: importing them here makes
    ``-show_version`` an install check, failing at once for a build made for another Python
    or platform rather than at the first config validation."""
    import psutil  # loads psutil._psutil_linux
    import pydantic_core  # loads pydantic_core._pydantic_core

    return (
        f"New Relic {INTEGRATION_NAME} integration Version: {__version__}, "
        f"Platform: {sys.platform}/{os.uname().machine}, Python: {sys.version.split()[0]}, "
        f"psutil: {psutil.__version__}, pydantic-core: {pydantic_core.__version__}"
    )


def _with_state_dir(config: Config, state_dir: str | None) -> Config:
    return dataclasses.replace(config, state_dir=state_dir) if state_dir else config


def load_config_or_exit(config_path: str | None, state_dir: str | None = None) -> Config:
    """Load and validate the config; on any problem print one [FATAL] line and exit 1."""
    try:
        config = load(locate(config_path))
    except ConfigError as exc:
        log.fatal(str(exc))
        raise SystemExit(1) from None
    return _with_state_dir(config, state_dir)


def add_operator_flags(parser: argparse.ArgumentParser) -> None:
    add_common_flags(parser)
    parser.add_argument(
        "--agent-config", default=None, metavar="PATH",
        help=f"agent config file or directory holding the inline config (default "
        f"{AGENT_CONFIG_DIR}) when no --config / CONFIG_PATH is given",
    )  # fmt: skip


def load_operator_config(ns: argparse.Namespace) -> Config:
    """The config for an operator command: explicit first, then the agent's inline one."""
    if ns.config or os.environ.get("CONFIG_PATH") or os.environ.get("WORKERWATCH_CONFIG"):
        return load_config_or_exit(ns.config, ns.state_dir)
    source = getattr(ns, "agent_config", None) or AGENT_CONFIG_DIR
    found = inline_config(source)
    if found is None:
        log.fatal(
            f"no configuration: pass --config PATH, set CONFIG_PATH or WORKERWATCH_CONFIG, "
            f"or keep an nri-workerwatch entry with an inline config: in {source}"
        )
        raise SystemExit(1)
    label, text = found
    try:
        config = parse(text, label)
    except ConfigError as exc:
        log.fatal(str(exc))
        raise SystemExit(1) from None
    return _with_state_dir(config, ns.state_dir)


def read_only_store(state_dir: str) -> Any:
    """A store loaded from the state file that never writes it and never takes its lock.

    Operator commands must not disturb the agent's state: the file is only ever replaced
    by an atomic rename, so reading it without the lock sees the old or the new one whole.
    """
    from workerwatch.state import FileStateStore

    class ReadOnlyStateStore(FileStateStore):
        def __enter__(self) -> ReadOnlyStateStore:
            self.writable = False
            if os.path.isdir(self.state_dir):
                self.raw = self._read()
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    return ReadOnlyStateStore(state_dir)
