"""Local ports for the processes stream-ctr starts (broker, workers, Prometheus in tests).

A port is free when this process can bind it on ``host``; the OS picks one with port 0. Another process may take
it between the check and its own bind, so starters also prove the process they started answers on it.
"""

from __future__ import annotations

import socket

__all__ = ["free_port", "free_port_pair", "port_free"]


def port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_port_pair(host: str = "127.0.0.1") -> int:
    """A free port ``p`` whose neighbour ``p + 1`` is free too (the worker and the trainer)."""
    while True:
        port = free_port(host)
        if port_free(host, port + 1):
            return port
