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

AGENT_CONFIG_DIR = "/etc/newrelic-infra/integrations.d"
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def agent_entries(path: str) -> list[tuple[str, Any]]:
    """(label, inline config) of nri-workerwatch entries in one agent config file."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(1_000_000)
    except OSError:
        return []

    # The agent replaces {{VAR}} from its own environment before parsing the YAML
    # (pkg/config/envvar/envvar.go); do the same so the config reads as the agent sees it.
    def env(match: re.Match[str]) -> str:
        return os.environ.get(match.group(1), match.group(0))

    try:
        data = yaml.safe_load(_PLACEHOLDER.sub(env, text))
    except yaml.YAMLError:
        return []
    out = []
    entries = data.get("integrations") if isinstance(data, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or "config" not in entry:
            continue
        command = entry.get("exec")
        words = command if isinstance(command, list) else str(command or "").split()
        if entry.get("name") == INTEGRATION_NAME or any(
            str(w).rstrip("/").endswith(INTEGRATION_NAME) for w in words
        ):
            out.append((f"{path} (inline config of {entry.get('name')})", entry["config"]))
    return out


def find_agent_config(directory: str = AGENT_CONFIG_DIR) -> tuple[str, str] | None:
    """(label, YAML text) of the first inline nri-workerwatch config in the agent's files."""
    import yaml

    for path in sorted(glob.glob(os.path.join(directory, "*.yml"))) + sorted(
        glob.glob(os.path.join(directory, "*.yaml"))
    ):
        for label, inline in agent_entries(path):
            text = inline if isinstance(inline, str) else yaml.safe_dump(inline)
            return label, text
    return None


def inline_config(source: str) -> tuple[str, str] | None:
    """(label, YAML text) from an agent config directory or one of its files, if any."""
    if os.path.isdir(source):
        return find_agent_config(source)
    entries = agent_entries(source)
    if not entries:
        return None
    import yaml

    label, inline = entries[0]
    return label, inline if isinstance(inline, str) else yaml.safe_dump(inline)
