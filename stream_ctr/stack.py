"""Running the service as processes: the broker, topics, the personalize worker and the trainer.

Used by ``stream-ctr up``, ``stream-ctr demo`` and the broker-tier tests. Every process it starts, it stops (by
its PID, in reverse order).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson

from . import topics
from .broker.admin import ensure_topics
from .broker.kafka import broker_for
from .config import Settings

__all__ = ["Stack", "get_json"]


def get_json(url: str, timeout: float = 5.0) -> tuple[int, dict]:
    """``(status, body as JSON)``; a body that is not JSON comes back as ``{"error": text}``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read()
    try:
        return status, orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        return status, {"error": body[:500].decode(errors="replace")}


class Stack:
    """Broker (local or ``KAFKA_BOOTSTRAP``) + declared topics + worker and trainer subprocesses."""

    def __init__(self, settings: Settings, log_dir: Path, trainer: bool = True, worker: bool = True):
        self.settings = settings
        self.log_dir = Path(log_dir)
        self.want_trainer, self.want_worker = trainer, worker
        self.broker = None
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def worker_url(self) -> str:
        return self.settings.web_url

    def start(self, timeout: float = 120.0) -> "Stack":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.broker = broker_for(self.settings.kafka_bootstrap).start()
        self.settings = self.settings.replace(kafka_bootstrap=self.broker.bootstrap)
        ensure_topics(self.settings.kafka_bootstrap, topics.declared(self.settings))
        try:
            if self.want_trainer:
                self.spawn("trainer")
            if self.want_worker:
                self.spawn("worker")
                self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def env(self, **overrides) -> dict[str, str]:
        """The children see exactly this stack's settings (every knob, ``overrides`` applied), unbuffered logs."""
        settings = self.settings.replace(**overrides) if overrides else self.settings
        return {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}

    def spawn(self, role: str, name: str | None = None, **overrides) -> subprocess.Popen:
        """Start ``stream-ctr <role>`` as process ``name`` (default: the role), with settings ``overrides``
        (e.g. another ``web_port`` for a second worker). A restart under the same name appends to its log."""
        name = name or role
        log = open(self.log_dir / f"{name}.log", "ab")
        if not self.settings.data_dir and "data_dir" not in overrides:  # a volume per process, kept over restarts
            overrides["data_dir"] = str(self.log_dir / f"{name}.data")
        proc = subprocess.Popen([sys.executable, "-m", "stream_ctr.cli", role], env=self.env(**overrides),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        """SIGKILL process ``name`` and reap it: a crash, with no chance to flush or commit anything."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def wait_healthy(self, timeout: float, url: str | None = None, every: float = 0.5) -> None:
        """Until the worker at ``url`` (default: this stack's) answers ``/healthz`` with 200, asking ``every``
        seconds; fails fast if any process of the stack exits."""
        url = url or self.worker_url
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.log_dir / (name + '.log')}")
            try:
                status, _ = get_json(f"{url}/healthz", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(every)
        raise TimeoutError(f"worker at {url} not healthy after {timeout:.0f}s; see the logs in {self.log_dir}")

    def stats(self, fresh: bool = False) -> dict:
        return get_json(f"{self.worker_url}/v1/stats" + ("?fresh=1" if fresh else ""), timeout=60)[1]

    def stop(self) -> None:
        for role, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
