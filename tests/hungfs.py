"""A real hung file system for the tests: a FUSE mount whose server never answers.

It behaves like an NFS server that went away: any lookup, directory listing or stat under
the mount blocks the caller in the kernel until the connection is aborted. Only the FUSE
INIT handshake is answered (protocol from linux include/uapi/linux/fuse.h).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import struct
import subprocess
import threading

FUSE_INIT = 26
_IN_HEADER = struct.Struct("<IIQQIIII")  # len, opcode, unique, nodeid, uid, gid, pid, pad
_OUT_HEADER = struct.Struct("<IiQ")  # len, error, unique
# fuse_init_out: major, minor, max_readahead, flags, max_background, congestion_threshold,
# max_write, time_gran, max_pages, map_alignment, flags2, unused[7]
_INIT_OUT = struct.Struct("<IIIIHHIIHHI7I")


class HungFS:
    def __init__(self, mountpoint: str) -> None:
        self.mountpoint = mountpoint
        self.fd = os.open("/dev/fuse", os.O_RDWR)
        libc = ctypes.CDLL(None, use_errno=True)
        options = f"fd={self.fd},rootmode=40000,user_id=0,group_id=0".encode()
        if libc.mount(b"hungfs", mountpoint.encode(), b"fuse", 0, options) != 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(err, f"mount fuse: {os.strerror(err)}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(50):
                continue
            try:
                request = os.read(self.fd, 1 << 20)
            except OSError:
                return
            _, opcode, unique, *_ = _IN_HEADER.unpack_from(request)
            if opcode == FUSE_INIT:
                body = _INIT_OUT.pack(7, 31, 0, 0, 16, 12, 4096, 1, 1, 0, 0, *[0] * 7)
                reply = _OUT_HEADER.pack(_OUT_HEADER.size + len(body), 0, unique) + body
                os.write(self.fd, reply)
            # Everything else is left unanswered: the caller hangs, as on a dead NFS server.

    def close(self) -> None:
        """Abort the connection: callers still hung get ENOTCONN, and the mount goes away."""
        self._stop.set()
        self._thread.join(timeout=2)
        subprocess.run(["umount", "-l", self.mountpoint], capture_output=True, check=False)
        with contextlib.suppress(OSError):
            os.close(self.fd)  # the last reference: the kernel aborts the FUSE connection
