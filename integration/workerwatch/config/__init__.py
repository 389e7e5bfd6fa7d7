"""The configuration: ``model`` defines it, ``validate`` checks a new file, ``load`` finds,
reads and caches it. The names most code needs are importable from here."""

from workerwatch.config.load import from_data, load, locate, parse, redacted
from workerwatch.config.model import (
    Canary,
    Config,
    ConfigError,
    Consumes,
    Group,
    Match,
    Sqs,
    Swf,
    SwfDomain,
)

__all__ = [
    "Canary",
    "Config",
    "ConfigError",
    "Consumes",
    "Group",
    "Match",
    "Sqs",
    "Swf",
    "SwfDomain",
    "from_data",
    "load",
    "locate",
    "parse",
    "redacted",
]
