"""Which socket peer a blocked syscall waits on: only for workers that look blocked.

psutil's ``net_connections()`` carries the fd, so the fd from ``/proc/PID/syscall`` maps
straight to the remote address. It walks the process's fd table and /proc/net, which is
why it runs only for the few workers whose main thread sits in an fd syscall unwoken.
"""

from __future__ import annotations


def _format(addr: object) -> str | None:
    if not addr:
        return None
    if isinstance(addr, str):
        return f"unix:{addr}"
    ip, port = addr  # type: ignore[misc]
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def resolve(pid: int, fd: int) -> str | None:
    """``ip:port`` (or ``unix:path``) of the socket ``fd`` of ``pid``, None if not a socket."""
    # Imported here: most runs resolve no peer, and psutil's import is a sizeable share
    # of a one-shot run's CPU.
    import psutil

    try:
        connections = psutil.Process(pid).net_connections(kind="all")
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    for conn in connections:
        if conn.fd == fd:
            return _format(conn.raddr) or (
                f"listening {_format(conn.laddr)}" if conn.laddr else "unconnected socket"
            )
    return None
