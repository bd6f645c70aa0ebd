"""TCP ports: free ones for tests and side-by-side benchmarks, and those a process listens on.

    http_port, grpc_port = free_port(), free_port()   # never the same one twice
    listening_ports(server.pid)                       # {8000, 8001, 8002}; None without /proc
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

_HANDED_OUT: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now and not handed out before by this process (for tests
    and side-by-side benchmarks).

    The kernel can give the same ephemeral port to two binds in a row once the first socket is
    closed: a server's HTTP and metrics ports then collide ("cannot listen to HTTP requests
    and metrics requests at the same address and port", seen in CI).
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise OSError("no free port that was not handed out already")


def listening_ports(pid: int) -> set[int] | None:
    """TCP ports that process `pid` listens on, from Linux's /proc; None where /proc can't say."""
    fd_dir = Path(f"/proc/{pid}/fd")
    if not fd_dir.is_dir() or not Path("/proc/net/tcp").exists():
        return None
    sockets = set()
    for fd in fd_dir.iterdir():
        try:
            sockets.add(os.readlink(fd))
        except OSError:  # closed while we looked
            continue
    ports = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for row in table.read_text().splitlines()[1:]:
            # sl local_address rem_address st ... inode; st 0A is LISTEN, ports are hex.
            fields = row.split()
            if fields[3] == "0A" and f"socket:[{fields[9]}]" in sockets:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
