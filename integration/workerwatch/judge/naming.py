"""Worker names, and which heartbeat file belongs to which process.

A worker is named by its systemd unit (``worker@3.service``) when it runs in one, else by
the ``worker`` its heartbeat declares, else ``<group>:<pid>``. Discovery already turned a
unit shared by several workers into ``<unit>/<pid>``.
"""

from __future__ import annotations

from pathlib import Path

from workerwatch.observations import HeartbeatObservation, Worker
from workerwatch.sanitize import clean_text


def worker_name(worker: Worker, hb: HeartbeatObservation | None) -> str:
    name = worker.unit or (hb.worker if hb and hb.worker else None)
    return clean_text(name or f"{worker.group}:{worker.pid}")


def stem(path: str) -> str:
    """File name without its extension: how a plain heartbeat file names its worker."""
    name = Path(path).name
    return name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name


def _name_matches(name: str | None, unit: str | None, pid: int) -> bool:
    if not name:
        return False
    candidates = {str(pid)}
    if unit:
        candidates |= {unit, unit.removesuffix(".service")}
    return name in candidates


def match_heartbeat(
    worker: Worker, beats: list[HeartbeatObservation]
) -> HeartbeatObservation | None:
    """The heartbeat of this process: by pid, else by the worker name it declares."""
    for hb in beats:
        if hb.pid == worker.pid:
            return hb
    for hb in beats:
        if hb.pid is None and _name_matches(hb.worker, worker.unit, worker.pid):
            return hb
        # A plain (or unparseable) file names its worker by its file name.
        plain = hb.pid is None and hb.worker is None
        if plain and _name_matches(stem(hb.path), worker.unit, worker.pid):
            return hb
    return None
