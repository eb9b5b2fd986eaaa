"""Servers of the monitoring tier, started as processes: one way to start one and to know it is ready.

``run_server(name, argv, ready_url, log)`` runs a server for the length of a ``with`` block and enters it only once
``ready_url`` answers (Prometheus' and Alertmanager's ``/-/ready``); a server that exits or is not ready within
20 s fails the test with the tail of its log. Its port is held from the pick until it stops
(``reservation=reserve_port()``, :mod:`stream_ctr.process.net`): no other process can take it before the server binds
it. ``run_prometheus(cfg, tmp)`` is that for ``prometheus`` on a port of its own, returning its URL beside the
context manager.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from stream_ctr.process import children
from stream_ctr.process.net import reserve_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
READY_S = 20.0


@contextlib.contextmanager
def _run_server(name: str, argv: list[str], ready_url: str, log: Path, reservation: socket.socket | None = None):
    """The server ``argv`` until the block ends; ``reservation``, the socket holding its port, is closed then."""
    log.unlink(missing_ok=True)
    proc = children.start(argv, log)
    try:
        deadline = time.monotonic() + READY_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(ready_url, timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{name} not ready in {READY_S:.0f} s:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
        yield proc
    finally:
        children.stop([proc], 15)
        if reservation is not None:
            reservation.close()


def _run_prometheus(cfg: Path, tmp: Path):
    if not Path(PROMETHEUS).exists():
        pytest.skip(f"{PROMETHEUS} not installed (Debian package 'prometheus')")
    reservation = reserve_port()
    url = f"http://127.0.0.1:{reservation.getsockname()[1]}"
    argv = [
        PROMETHEUS,
        f"--config.file={cfg}",
        f"--storage.tsdb.path={tmp / 'prometheus-data'}",
        f"--web.listen-address={url.removeprefix('http://')}",
        "--log.level=warn",
    ]
    return url, _run_server("prometheus", argv, f"{url}/-/ready", tmp / "prometheus.log", reservation)


@pytest.fixture(scope="session")
def run_server():
    return _run_server


@pytest.fixture(scope="session")
def run_prometheus():
    return _run_prometheus
