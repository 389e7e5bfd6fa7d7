"""The configuration file: found, read, validated once, then loaded cheaply.

The file is found by ``--config PATH``, else ``CONFIG_PATH`` (the agent writes its inline
``config:`` block to a temp file and passes it that way), else ``WORKERWATCH_CONFIG``.
Every problem becomes one ``ConfigError`` whose message names the file, the key and what
is wrong; the CLI prints it as a single ``[FATAL]`` line.

Validation lives in ``validate`` (pydantic models built from ``model``). Building those
models costs more CPU than a whole collection of 200 workers, and the agent starts us every
15-30 s with the same file, so ``load`` keeps the validated, normalised result in
``<state_dir>/config.cache.json`` keyed by the file's SHA-256 and our version, and builds
the records of ``model`` from it. A changed file, another version or an unusable cache
simply means validating again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from typing import Any

from workerwatch import records
from workerwatch.config.model import DEFAULT_STATE_DIR, Config, ConfigError
from workerwatch.sanitize import redact

MAX_CONFIG_BYTES = 1_000_000
CACHE_FILE = "config.cache.json"


def locate(cli_path: str | None, env: dict[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    for candidate in (cli_path, env.get("CONFIG_PATH"), env.get("WORKERWATCH_CONFIG")):
        if candidate:
            return candidate
    raise ConfigError(
        "no configuration given: pass --config PATH or set CONFIG_PATH or WORKERWATCH_CONFIG"
    )


def read_yaml(text: str, what: str) -> Any:
    """YAML text as data, or ``ConfigError`` starting with ``what`` (``config PATH``): the
    one way a config or an agent file is parsed."""
    import yaml

    try:
        # SafeLoader refuses Python tags; the size cap bounds alias-expansion bombs' input,
        # and the node-count check bounds their expansion.
        return yaml.load(text, Loader=_BoundedLoader)
    except _TooBig as exc:
        raise ConfigError(f"{what}: {exc}") from None
    except RecursionError:
        # The pure-Python loader (no libyaml) recurses once per nesting level.
        raise ConfigError(f"{what}: not valid YAML: nested too deeply") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what}: {yaml_problem(exc, text)}") from None


def _yaml(text: str, path: str) -> dict[str, Any]:
    data = read_yaml(text, f"config {path}")
    if data is None:
        raise ConfigError(f"config {path}: the file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: expected a mapping at the top level")
    return data


def yaml_problem(exc: Exception, text: str) -> str:
    """A YAML parse error in one phrase: where, and what (a tab is called a tab)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if (mark and _char_at(text, mark.line, mark.column) == "\t") or "tab" in problem:
        # libyaml says only "found character that cannot start any token" for a tab.
        problem = "a tab character; YAML indents with spaces only"
    return f"not valid YAML{where}: {problem}"


def _char_at(text: str, line: int, column: int) -> str:
    lines = text.splitlines()
    return lines[line][column : column + 1] if 0 <= line < len(lines) else ""


def parse(text: str, path: str = "<config>") -> Config:
    """Validate YAML text into a ``Config``; raise ``ConfigError`` with one clear line."""
    return from_data(_yaml(text, path), path)


def from_data(data: Any, path: str = "<data>") -> Config:
    """Validate plain data (a parsed file, or a test's dict) into a ``Config``."""
    from workerwatch.config.validate import validate

    return _build(validate(data, path))


def _build(validated: dict[str, Any]) -> Config:
    config, _ = records.load(Config, validated)
    return config


def load(path: str, use_cache: bool = True) -> Config:
    """Read, validate (or reuse the validation of this exact file) and return the config."""
    try:
        size = os.stat(path).st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config {path}: file is {size} bytes, larger than 1 MB")
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
        text = raw.decode("utf-8")
    except ConfigError:
        raise
    except UnicodeDecodeError:
        raise ConfigError(f"config {path}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"config {path}: cannot read: {exc.strerror or exc}") from None
    if not use_cache:
        return parse(text, path)
    key = _cache_key(raw)
    # Where the cache would be, found without parsing the YAML; the key is the file's hash,
    # so an entry found anywhere is this very file's validation, and a miss only costs a
    # full validation.
    match = _STATE_DIR_LINE.search(text)
    cached = _read_cache(match.group(1) if match else DEFAULT_STATE_DIR, key)
    if cached is not None:
        # records.load checks every field again: a cache that is not what we wrote (another
        # version's, edited by hand) only costs a validation.
        with contextlib.suppress(TypeError, KeyError, AttributeError, ValueError, ConfigError):
            if _has_userinfo(cached):
                cached = _with_endpoints(cached, _yaml(text, path))
            return _build(cached)
    from workerwatch.config.validate import validate

    validated = validate(_yaml(text, path), path)
    _write_cache(validated["state_dir"], key, without_userinfo(validated))
    return _build(validated)


# Block YAML (``state_dir: /x``) and flow style or JSON (``{"state_dir": "/x", ...}``). Only
# the top level may hold this key (unknown keys are errors), and a wrong guess only costs
# a validation.
_STATE_DIR_LINE = re.compile(r"""["']?\bstate_dir["']?[ \t]*:[ \t]*["']?(/[^"'#,\s}\]]*)""")


_SECRET_BEARING = ("swf", "sqs")  # sections whose endpoint_url may carry user:password@


def without_userinfo(data: dict[str, Any]) -> dict[str, Any]:
    """Plain config data without credentials: endpoint URLs lose their user:password@.

    For the cache (marked, so the URLs are put back from the file) and the inventory.
    """
    out = dict(data)
    for section in _SECRET_BEARING:
        url = out[section].get("endpoint_url") if isinstance(out.get(section), dict) else None
        if url and redact(url) != url:
            out[section] = {**out[section], "endpoint_url": redact(url)}
            out["_userinfo_removed"] = True
    return out


def _has_userinfo(cached: dict[str, Any]) -> bool:
    return cached.pop("_userinfo_removed", False) is True


def _with_endpoints(cached: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    """Put back the endpoint URLs from the file itself (validated when the cache was made)."""
    out = dict(cached)
    for section in _SECRET_BEARING:
        url = (
            raw.get(section, {}).get("endpoint_url") if isinstance(raw.get(section), dict) else None
        )
        if isinstance(out.get(section), dict) and isinstance(url, str):
            out[section] = {**out[section], "endpoint_url": url.strip()}
    return out


def _sha256() -> Any:
    """SHA-256 from CPython's own implementation when it has one (``_sha2`` from 3.12,
    ``_sha256`` before): ``hashlib`` loads OpenSSL's libcrypto, about 3 ms of CPU and 3.5 MiB
    of RSS at every run, for one hash of a small file. Same digest either way."""
    try:
        from _sha2 import sha256
    except ImportError:
        try:
            from _sha256 import sha256
        except ImportError:  # a build without them
            from hashlib import sha256
    return sha256


def _cache_key(raw: bytes) -> str:
    from workerwatch import __version__

    return f"{__version__}:{_sha256()(raw).hexdigest()}"


def _read_cache(state_dir: str, key: str) -> dict[str, Any] | None:
    """The cached validation of this exact file, if trustworthy (ours, not writable by others)."""
    try:
        fd = os.open(os.path.join(state_dir, CACHE_FILE), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            entry = json.loads(handle.read(4 * MAX_CONFIG_BYTES))
    except (OSError, ValueError, RecursionError):
        return None
    finally:
        os.close(fd)
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    config = entry.get("config")
    return config if isinstance(config, dict) else None


def _write_cache(state_dir: str, key: str, validated: dict[str, Any]) -> None:
    """Best effort: without a usable state_dir every run just validates again."""
    tmp = None
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        import tempfile  # a cache miss only

        fd, tmp = tempfile.mkstemp(prefix=".config.", dir=state_dir)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"key": key, "config": validated}, handle, allow_nan=False)
        os.replace(tmp, os.path.join(state_dir, CACHE_FILE))
        tmp = None
    except (OSError, ValueError):
        pass
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


class _TooBig(Exception):
    pass


def _make_bounded_loader() -> type:
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class BoundedLoader(base):  # type: ignore[misc, valid-type]
        """SafeLoader that refuses documents expanding into too many nodes (YAML bombs)."""

        max_nodes = 100_000

        def construct_document(self, node: Any) -> Any:
            count = 0
            stack = [node]
            while stack:
                current = stack.pop()
                count += 1
                if count > self.max_nodes:
                    raise _TooBig("document expands to too many nodes (aliases?)")
                if isinstance(current, yaml.SequenceNode):
                    stack.extend(current.value)
                elif isinstance(current, yaml.MappingNode):
                    for key, value in current.value:
                        stack.append(key)
                        stack.append(value)
            return super().construct_document(node)

    return BoundedLoader


class _LazyLoader:
    _cls: type | None = None

    def __call__(self, stream: Any) -> Any:
        if _LazyLoader._cls is None:
            _LazyLoader._cls = _make_bounded_loader()
        return _LazyLoader._cls(stream)


_BoundedLoader = _LazyLoader()


def redacted(config: Config) -> dict[str, Any]:
    """The effective configuration without anything secret, for inventory."""
    data = without_userinfo(records.dump(config, exclude_none=True))
    data.pop("_userinfo_removed", None)
    return data
