"""Which running processes are workers, and how they group into proposed config groups.

The rule (also ``discover --help``'s and the README's) is in the package docstring; each
group's match rules are checked here against the live process table with the collection's
own discovery, so the proposal selects exactly the processes it lists.
"""

from __future__ import annotations

import os
import re
from dataclasses import field

from workerwatch.config.model import Group
from workerwatch.host import survey
from workerwatch.host.discover import discover
from workerwatch.records import record

_INTERPRETER = re.compile(r"^(python|pypy|ruby|node|nodejs|perl|php|java)[0-9.]*$")
_SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "fish", "csh", "tcsh", "su", "sudo", "login"}
_SYSTEM_DIRS = ("/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/", "/snap/")
# The system's own template units: consoles, user sessions, systemd's helpers.
_SYSTEM_TEMPLATES = re.compile(
    r"^(getty|serial-getty|container-getty|autovt|console-getty|user|user-runtime-dir|"
    r"systemd-[\w-]+|modprobe|dbus-[\w-]+|lvm2-[\w-]+|mdmon|ifup|wpa_supplicant)@"
)
# Files a worker writes that are not its log.
# Unnamed (O_TMPFILE) files show as /dir/#inode.
_NOT_LOGS = re.compile(r"(\.(db|sqlite3?|lock|pid|tmp|swp|json|sock)|/[.#][^/]*)$")
# Python options followed by a value (python -m, -c, -W, -X): the script is what follows.
_VALUE_OPTIONS = {"-W", "-X", "--check-hash-based-pycs"}


@record
class Proposed:
    name: str
    members: list[survey.Seen]
    unit: str | None = None  # the template pattern, e.g. worker@*.service
    cmdline: str | None = None
    why_cmdline: str = ""
    problem: str | None = None  # set when no rule selects exactly the members
    extra: list[str] = field(default_factory=list)


def _base(path: str) -> str:
    return os.path.basename(path)


def _script(argv: list[str]) -> str | None:
    """The script or module an interpreter runs: ``worker.py``, ``-m demo.worker``."""
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-m", "-c", "-jar"):
            value = next(args, "")
            return f"{arg} {value}" if arg != "-c" else None  # -c code: a one-off
        if arg in _VALUE_OPTIONS:
            next(args, None)
            continue
        if not arg.startswith("-"):
            return arg
    return None


def is_system(path: str) -> bool:
    return path.startswith(_SYSTEM_DIRS)


def _template(unit: str | None) -> str | None:
    """``worker@3.service`` -> ``worker@*.service``, except the system's own templates."""
    if unit is None or "@" not in unit or not unit.endswith(".service"):
        return None
    if _SYSTEM_TEMPLATES.match(unit):
        return None
    return unit.split("@", 1)[0] + "@*.service"


def log_paths(item: survey.Seen) -> list[str]:
    return [p for p in item.logs if not _NOT_LOGS.search(p)]


def select(procs: list[survey.Seen], min_age: float, narrow: str | None) -> list[survey.Seen]:
    """The workers, by the rule in the module docstring (details filled in for them)."""
    pattern = re.compile(narrow) if narrow else None
    chosen = []
    for item in procs:
        if item.pid == 1 or item.age < min_age or not item.argv:
            continue
        if pattern is not None and not pattern.search(item.cmdline):
            continue
        exe = _base(item.argv[0])
        if exe in _SHELLS or exe.startswith("-"):
            continue
        if _template(item.unit):
            if not is_system(item.argv[0]) or _INTERPRETER.match(exe):
                chosen.append(item)
            continue
        if not _INTERPRETER.match(exe):
            continue
        script = _script(item.argv)
        if script is None or is_system(script.split()[-1]):
            continue
        survey.fill_details(item)
        if log_paths(item) or "WORKERWATCH_HEARTBEAT_DIR" in item.env:
            chosen.append(item)
    for item in chosen:
        if not item.detailed:
            survey.fill_details(item)
    return chosen


def _key_regex(argv0: str, script: str | None) -> str:
    """Anchored: the interpreter as started, then the script as a whole word, so
    ``worker.py`` never matches ``queue_worker.py`` (nor ``/x/worker.py.bak``)."""
    head = "^" + re.escape(argv0)
    if script is None:
        return head + "(?: |$)"
    return head + r"(?: \S+)*? " + re.escape(script) + "(?: |$)"


def _exact_regex(members: list[survey.Seen]) -> str:
    lines = sorted({m.cmdline for m in members})
    return "^(?:" + "|".join(re.escape(line) for line in lines) + ")$"


def _stem(script: str) -> str:
    """A group name from the script: ``/opt/bot/worker.py`` -> worker, ``-m demo.cron`` -> cron."""
    if script.startswith("-m "):
        return script.split()[-1].rsplit(".", 1)[-1]
    return re.sub(r"\.\w+$", "", _base(script.split()[-1]))


def group_workers(workers: list[survey.Seen]) -> list[Proposed]:
    """One group per template unit, else per interpreter + script (or program)."""
    by_key: dict[tuple[str, ...], list[survey.Seen]] = {}
    for item in workers:
        template = _template(item.unit)
        key = ("unit", template) if template else ("cmd", item.argv[0], _script(item.argv) or "")
        by_key.setdefault(key, []).append(item)
    proposals: list[Proposed] = []
    names: set[str] = set()
    # Units first: discovery gives a process to the first group that matches it, so a
    # unit's workers are claimed before a command-line group could take them too.
    for key, members in sorted(by_key.items(), key=lambda kv: (kv[0][0] != "unit", kv[0])):
        if key[0] == "unit":
            stem = key[1].split("@", 1)[0]
            proposal = Proposed(stem, members, unit=key[1])
        else:
            script = key[2] or None
            stem = _stem(script) if script else _base(key[1])
            proposal = Proposed(
                stem,
                members,
                cmdline=_key_regex(key[1], script),
                why_cmdline="the interpreter and the script as started, anchored",
            )
        name, n = re.sub(r"[^\w.@-]+", "-", proposal.name) or "workers", 2
        while name in names:
            name, n = f"{proposal.name}-{n}", n + 1
        proposal.name = name
        names.add(name)
        proposals.append(proposal)
    return proposals


def _as_groups(proposals: list[Proposed]) -> list[Group]:
    from workerwatch.config.load import from_data

    data = {
        "groups": [{"name": p.name, "match": _match(p)} for p in proposals if p.problem is None]
    }
    return from_data(data, "<proposal>").groups if data["groups"] else []


def _match(p: Proposed) -> dict[str, str]:
    rules = {}
    if p.unit:
        rules["systemd_unit"] = p.unit
    if p.cmdline:
        rules["cmdline"] = p.cmdline
    return rules


def _selected(proposals: list[Proposed]) -> dict[str, set[int]]:
    """What the collection's discovery selects for each group, all groups at once."""
    found: dict[str, set[int]] = {p.name: set() for p in proposals}
    for worker in discover(_as_groups(proposals)).workers:
        found[worker.group].add(worker.pid)
    return found


def verify(proposals: list[Proposed]) -> None:
    """Tighten each group until the collection's discovery selects exactly its members.

    A unit pattern alone also takes the unit's other processes (a wrapper shell, a helper):
    the members' command lines are added. A loose command line takes a one-off run of the
    same script: the exact command lines replace it. What still differs is a problem,
    said on the group and on stderr.
    """
    for attempt in range(3):
        for p in proposals:  # a member that exited since the survey is no longer one
            p.members = [m for m in p.members if os.path.exists(f"/proc/{m.pid}")]
        found = _selected(proposals)
        wrong = [p for p in proposals if p.problem is None and found[p.name] != member_pids(p)]
        if not wrong:
            return
        for p in wrong:
            extra = found[p.name] - member_pids(p)
            if attempt == 0 and p.unit and extra:
                keys = sorted({_key_regex(m.argv[0], _script(m.argv)) for m in p.members})
                p.cmdline = keys[0] if len(keys) == 1 else "|".join(f"(?:{k})" for k in keys)
                p.why_cmdline = (
                    f"the unit also runs pid(s) {pid_list(extra)}, which are not workers: "
                    "the members' command lines, anchored"
                )
            elif attempt <= 1 and extra:
                p.cmdline = _exact_regex(p.members)
                p.why_cmdline = (
                    f"the script alone also matches pid(s) {pid_list(extra)}: "
                    "the members' exact command lines"
                )
            elif attempt == 2 or not extra:
                missing = member_pids(p) - found[p.name]
                p.problem = (
                    f"no match rule selects exactly pids {pid_list(member_pids(p))} "
                    f"(also: {pid_list(extra) or '-'}, not: {pid_list(missing) or '-'})"
                )
    found = _selected(proposals)
    for p in proposals:
        if p.problem is None and found[p.name] != member_pids(p):
            p.problem = (
                f"the rules select pids {pid_list(found[p.name])}, not {pid_list(member_pids(p))}"
            )


def member_pids(p: Proposed) -> set[int]:
    return {m.pid for m in p.members}


def pid_list(pids: set[int], limit: int = 12) -> str:
    shown = sorted(pids)
    more = f" and {len(shown) - limit} more" if len(shown) > limit else ""
    return ", ".join(str(pid) for pid in shown[:limit]) + more
