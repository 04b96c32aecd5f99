"""Ports for servers the tests and the benchmarks start: a free one on 127.0.0.1, and whether a
given process is the one listening on it (development tooling, not part of the service)."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` or a child of it (a server under py-spy) holds the socket listening on
    `port` (Linux /proc). Between free_port() and a server's bind, another test's or bench's server
    may take the port, and it answers /healthz as well as ours would."""
    inodes: set[str] = set()
    read = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if f[3] == "0A" and int(f[1].rpartition(":")[2], 16) == port:  # 0A: LISTEN
                    inodes.add(f"socket:[{f[9]}]")
            read = True
    if not read:  # no /proc to ask: /healthz's answer has to do
        return True
    return any(_holds(p, inodes) for p in (pid, *_children(pid)))


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN: the process itself only
        return []


def _holds(pid: int | str, inodes: set[str]) -> bool:
    try:
        return any(os.readlink(fd) in inodes for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # it exited meanwhile
        return False
