"""Servers of the monitoring tier, started as processes: one way to start one and to know it is ready.

``run_server(name, argv, ready_url, log)`` runs a server for the length of a ``with`` block and enters it only once
``ready_url`` answers (Prometheus' and Alertmanager's ``/-/ready``); a server that exits or is not ready within
20 s fails the test with the tail of its log. ``run_prometheus(cfg, tmp)`` is that for ``prometheus`` on a free
port, returning its URL beside the context manager.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from stream_ctr.net import free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
READY_S = 20.0


@contextlib.contextmanager
def _run_server(name: str, argv: list[str], ready_url: str, log: Path):
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
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
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _run_prometheus(cfg: Path, tmp: Path):
    if not Path(PROMETHEUS).exists():
        pytest.skip(f"{PROMETHEUS} not installed (Debian package 'prometheus')")
    url = f"http://127.0.0.1:{free_port()}"
    argv = [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'prometheus-data'}",
            f"--web.listen-address={url.removeprefix('http://')}", "--log.level=warn"]
    return url, _run_server("prometheus", argv, f"{url}/-/ready", tmp / "prometheus.log")


@pytest.fixture(scope="session")
def run_server():
    return _run_server


@pytest.fixture(scope="session")
def run_prometheus():
    return _run_prometheus
