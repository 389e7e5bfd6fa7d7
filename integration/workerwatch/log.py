"""stderr logging in the Go SDK's ``[LEVEL] message`` style, which the agent parses.

The agent maps ``[ERR]``/``[FATAL]`` lines to errors and everything else to debug
(infrastructure-agent runner.go ``handleStderr``), so only real failures use ``[ERR]``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

_verbose = False
_sink: Callable[[str, str], None] | None = None


def set_verbose(on: bool) -> None:
    global _verbose
    _verbose = on


def set_sink(sink: Callable[[str, str], None] | None) -> None:
    """Send records somewhere other than stderr (the host-phase child forwards them)."""
    global _sink
    _sink = sink


def write(level: str, message: str) -> None:
    # One record per line: a newline inside a message would look like a second record.
    text = " ".join(str(message).split("\n"))
    if _sink is not None:
        _sink(level, text)
        return
    try:
        sys.stderr.write(f"[{level}] {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def debug(message: str) -> None:
    if _verbose:
        write("DEBUG", message)


def info(message: str) -> None:
    write("INFO", message)


def warn(message: str) -> None:
    write("WARN", message)


def error(message: str) -> None:
    write("ERR", message)


def fatal(message: str) -> None:
    write("FATAL", message)
