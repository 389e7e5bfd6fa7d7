"""stderr logging in the Go SDK's ``[LEVEL] message`` style, which the agent parses.

The agent maps ``[ERR]``/``[FATAL]`` lines to errors and everything else to debug
(infrastructure-agent runner.go ``handleStderr``), so only real failures use ``[ERR]``.
"""

from __future__ import annotations

import sys

_verbose = False
_said_once: set[str] = set()


def set_verbose(on: bool) -> None:
    global _verbose
    _verbose = on


def _write(level: str, message: str) -> None:
    # One record per line: a newline inside a message would look like a second record.
    text = " ".join(str(message).split("\n"))
    try:
        sys.stderr.write(f"[{level}] {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def debug(message: str) -> None:
    if _verbose:
        _write("DEBUG", message)


def info(message: str) -> None:
    _write("INFO", message)


def warn(message: str) -> None:
    _write("WARN", message)


def error(message: str) -> None:
    _write("ERR", message)


def fatal(message: str) -> None:
    _write("FATAL", message)


def warn_once(key: str, message: str) -> None:
    """Warn once per process, for conditions that would otherwise repeat every cycle."""
    if key not in _said_once:
        _said_once.add(key)
        warn(message)
