"""The inline ``config:`` of an nri-workerwatch entry in the agent's integrations.d files.

For operator commands (``status``, ``diagnose``) run by someone who has no ``CONFIG_PATH``:
the configuration the agent passes is found where the agent reads it.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any

from workerwatch import INTEGRATION_NAME
from workerwatch.config.load import read_yaml
from workerwatch.config.model import ConfigError

AGENT_CONFIG_DIR = "/etc/newrelic-infra/integrations.d"
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def agent_entries(path: str) -> list[tuple[str, Any]]:
    """(label, inline config) of nri-workerwatch entries in one agent config file; a file
    that cannot be read or parsed has none (``read_entries`` says why)."""
    try:
        return read_entries(path)
    except ConfigError:
        return []


def read_entries(path: str) -> list[tuple[str, Any]]:
    """(label, inline config) of the nri-workerwatch entries of one agent config file, in
    file order; ``ConfigError`` when the file cannot be read or is not YAML."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(1_000_000)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"agent config {path}: cannot read: {exc}") from None

    # The agent replaces {{VAR}} from its own environment before parsing the YAML
    # (pkg/config/envvar/envvar.go); do the same so the config reads as the agent sees it.
    def env(match: re.Match[str]) -> str:
        return os.environ.get(match.group(1), match.group(0))

    text = _PLACEHOLDER.sub(env, text)
    data = read_yaml(text, f"agent config {path}")
    out = []
    entries = data.get("integrations") if isinstance(data, dict) else None
    for number, entry in enumerate(entries if isinstance(entries, list) else [], 1):
        if not isinstance(entry, dict) or "config" not in entry:
            continue
        command = entry.get("exec")
        words = command if isinstance(command, list) else str(command or "").split()
        if entry.get("name") == INTEGRATION_NAME or any(
            str(w).rstrip("/").endswith(INTEGRATION_NAME) for w in words
        ):
            label = f"{path} (inline config of integrations entry {number}, {entry.get('name')})"
            out.append((label, entry["config"]))
    return out


def as_text(inline: Any) -> str:
    """The inline ``config:`` as YAML text (the agent writes a mapping out the same way)."""
    import yaml

    return inline if isinstance(inline, str) else yaml.safe_dump(inline)


def agent_files(source: str) -> list[str]:
    """The agent config files of a directory (``*.yml`` then ``*.yaml``, as the agent reads
    them), or the one file given."""
    if not os.path.isdir(source):
        return [source]
    return sorted(glob.glob(os.path.join(source, "*.yml"))) + sorted(
        glob.glob(os.path.join(source, "*.yaml"))
    )


def find_agent_config(directory: str = AGENT_CONFIG_DIR) -> tuple[str, str] | None:
    """(label, YAML text) of the first inline nri-workerwatch config in the agent's files."""
    for path in agent_files(directory):
        for label, inline in agent_entries(path):
            return label, as_text(inline)
    return None


def inline_config(source: str) -> tuple[str, str] | None:
    """(label, YAML text) from an agent config directory or one of its files, if any."""
    if os.path.isdir(source):
        return find_agent_config(source)
    entries = agent_entries(source)
    if not entries:
        return None
    label, inline = entries[0]
    return label, as_text(inline)
