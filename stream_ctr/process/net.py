"""Local ports for the processes stream-ctr starts (broker, workers, Prometheus in tests), handed over without races.

A port that is only *free* when it is picked can be taken before the process it was picked for binds it: by a
``bind(0)`` elsewhere, or as the source port of an outgoing connection. So a starter *reserves* the port instead
and holds the reservation for as long as it runs the process (:func:`reserve_port`): a socket bound to the port
with ``SO_REUSEADDR``, never listening. Meanwhile the kernel hands the port to no ``bind(0)`` and no outgoing
connection, and a plain ``bind`` of it fails, yet the process it is meant for binds and listens on it: servers set
``SO_REUSEADDR`` (asyncio/aiohttp, the JVM and Go all do), and that is allowed beside a socket that does not
listen. A restarted process finds its port again for the same reason.

What a reservation cannot stop is a foreign process that binds that very port number itself, with
``SO_REUSEADDR``, having picked it racily. The process then fails to bind: ``stream-ctr worker`` and ``trainer``
exit with :data:`EXIT_PORT_TAKEN`, and :class:`stream_ctr.service.stack.Stack` starts them again on another reserved
port;
:func:`listens` tells whether the process answering on a port is the one that was started.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

__all__ = ["EXIT_PORT_TAKEN", "free_port", "listens", "port_taken", "reserve_port"]

#: Exit status of ``stream-ctr worker|trainer`` when its HTTP port is taken (EX_TEMPFAIL: retry, elsewhere).
EXIT_PORT_TAKEN = 75


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now (and so possibly taken by the time it is used: prefer :func:`reserve_port`)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def reserve_port(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A socket that holds a port on ``host`` until it is closed: ``port`` when nothing else uses it (one left in
    TIME_WAIT by a stopped server counts as free, as it does for servers), else (or for 0) one the kernel picks.
    ``reserve_port(...).getsockname()[1]`` is the port to give the server process."""
    if port:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            return sock
        except OSError:
            sock.close()
    sock = socket.socket()
    sock.bind((host, 0))
    # Set after the bind: no other reservation (with SO_REUSEADDR) could share the port the kernel picked.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def port_taken(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an exception it was raised from or while handling, is "address already in use"."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _family(pid: int) -> list[int]:
    """``pid`` and its descendants (from ``/proc``)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return found


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` or one of its descendants (a trainer group's rank 0) holds a TCP socket listening
    on ``port`` (read from ``/proc``; where there is no ``/proc/net/tcp``, True: nothing to check against)."""
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].exists():
        return True
    sockets = set()
    for table in tables:
        try:
            rows = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:  # sl local_address rem_address st ... inode
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                sockets.add(f"socket:[{fields[9]}]")
    for member in _family(pid):
        try:
            fds = os.listdir(f"/proc/{member}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{member}/fd/{fd}") in sockets:
                    return True
            except OSError:
                continue
    return False
