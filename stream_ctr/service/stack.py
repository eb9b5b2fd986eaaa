"""Running the service as processes: the broker, topics, the personalize worker and the trainer.

Used by ``stream-ctr up``, ``stream-ctr demo``, the benches and the broker-tier tests. Every process it starts, it
stops by its PID (workers and trainers together, then the broker: a few seconds), and none outlives it: they are
started with :mod:`stream_ctr.process.children`, so they die with the stack's process even when that is SIGKILLed.

Ports cannot race. The stack gives each worker and trainer its HTTP port and holds a reservation on it
(:func:`stream_ctr.process.net.reserve_port`) until it stops, so no other process is handed the port before the child
binds it, nor while a killed child is restarted. The configured port is used when nothing else uses it, a fresh one
otherwise: ``settings`` and :meth:`Stack.url` say which. Should a foreign process still bind the port first, the
child exits with :data:`~stream_ctr.process.net.EXIT_PORT_TAKEN` and :meth:`Stack.wait_healthy` starts it again on a new
reserved port. A process counts as healthy once it answers ``/healthz`` and is the one listening on its port.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson

from stream_ctr import topics
from stream_ctr.broker.admin import ensure_topics
from stream_ctr.broker.kafka import ExternalKafka, LocalKafka, broker_for
from stream_ctr.config import Settings
from stream_ctr.process import children
from stream_ctr.process.net import EXIT_PORT_TAKEN, listens, reserve_port

__all__ = ["Stack", "get_json"]

log = logging.getLogger(__name__)

#: The setting that carries each role's HTTP port.
PORT_SETTING = {"worker": "web_port", "trainer": "trainer_web_port", "scorer": "web_port"}
#: The roles whose process of the same name has its port in the stack's settings (a scorer takes any free one).
OWN_PORTS = ("worker", "trainer")
#: Times a process is started again on a fresh port because its port was taken, before the stack gives up.
PORT_ATTEMPTS = 5
#: Seconds workers and trainers get to stop after SIGTERM, together, before SIGKILL; then the same for the broker.
STOP_GRACE_S = 4.0
BROKER_GRACE_S = 3.0


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
    """Broker (local or ``KAFKA_BOOTSTRAP``) + declared topics + worker and trainer subprocesses.

    ``procs`` maps each process name to its process and ``ports`` to its HTTP port; ``settings`` carries the
    broker's address and the ports of the stack's own worker and trainer."""

    def __init__(self, settings: Settings, log_dir: Path, trainer: bool = True, worker: bool = True, scorers: int = 0):
        self.settings = settings
        self.log_dir = Path(log_dir)
        self.want_trainer, self.want_worker, self.want_scorers = trainer, worker, scorers
        self.broker: LocalKafka | ExternalKafka | None = None
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}
        self._specs: dict[str, tuple[str, dict]] = {}  # name -> (role, overrides): how to start it again
        self._moves: dict[str, int] = {}  # name -> times started again because its port was taken
        self._held: dict[int, socket.socket] = {}  # port -> its reservation

    @property
    def worker_url(self) -> str:
        return self.url("worker")

    @property
    def scorer_names(self) -> list[str]:
        """The names of the stack's own scorer processes (``scorer1`` ...)."""
        return [f"scorer{n + 1}" for n in range(self.want_scorers)]

    def url(self, name: str = "worker") -> str:
        """Base URL of process ``name``: on the port the stack gave it (before that, the configured one)."""
        port = self.ports.get(name) or (self.settings.trainer_port if name == "trainer" else self.settings.web_port)
        return f"http://{self.settings.advertised_host}:{port}"

    def start(self, timeout: float = 120.0) -> Stack:
        """Start (or reach) the broker, create the topics, start the trainer and the worker (as wanted) and wait
        until both are healthy, then the scorers. On failure, everything started so far is stopped."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.broker = broker_for(self.settings).start()
            self.settings = self.settings.replace(kafka_bootstrap=self.broker.bootstrap)
            ensure_topics(self.settings, topics.declared(self.settings))
            if self.want_trainer:
                self.spawn("trainer")
            if self.want_worker:
                self.spawn("worker")
            for name in list(self.procs):
                self.wait_healthy(timeout, name)
            for name in self.scorer_names:  # after the worker: they read the users changelog it creates
                self.spawn("scorer", name)
            for name in self.scorer_names:
                self.wait_healthy(timeout, name)
        except BaseException:
            self.stop()
            raise
        return self

    def env(self, **overrides) -> dict[str, str]:
        """The children see exactly this stack's settings (every knob, ``overrides`` applied), unbuffered logs."""
        settings = self.settings.replace(**overrides) if overrides else self.settings
        return {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}

    def spawn(self, role: str, name: str | None = None, **overrides) -> subprocess.Popen:
        """Start ``stream-ctr <role>`` as process ``name`` (default: the role) with settings ``overrides`` (e.g.
        another ``app_id``). Its HTTP port is the one ``name`` had (a restart), else the one in ``overrides`` or,
        for the stack's own worker and trainer, in ``settings``, else any; held by the stack, and a fresh one when
        in use. A restart under the same name appends to its log and keeps its volume."""
        name = name or role
        wanted = overrides.pop(PORT_SETTING[role], None) or self.ports.get(name)
        if not wanted and name == role in OWN_PORTS:
            wanted = self.settings.trainer_port if role == "trainer" else self.settings.web_port
        self._specs[name] = (role, overrides)
        return self._launch(name, self._hold(wanted or 0))

    def _hold(self, port: int) -> int:
        """Reserve ``port`` (0: any) until the stack stops, or a fresh port when it is in use; the port held."""
        if port in self._held:
            return port
        sock = reserve_port(self.settings.web_bind, port)
        held = sock.getsockname()[1]
        if port and held != port:
            log.warning("port %d is in use; using %d instead", port, held)
        self._held[held] = sock
        return held

    def _launch(self, name: str, port: int) -> subprocess.Popen:
        role, overrides = self._specs[name]
        setting = PORT_SETTING[role]
        self.ports[name] = port
        if name == role in OWN_PORTS:  # the stack's own worker and trainer: their ports are in its settings
            self.settings = self.settings.replace(**{setting: port})
        overrides = {**overrides, setting: port}
        if not self.settings.data_dir and "data_dir" not in overrides:  # a volume per process, kept over restarts
            overrides["data_dir"] = str(self.log_dir / f"{name}.data")
        proc = children.start(
            [sys.executable, "-m", "stream_ctr.cli", role], self.log_path(name), self.env(**overrides)
        )
        self.procs[name] = proc
        return proc

    def _local_broker(self) -> LocalKafka | None:
        """The broker this stack runs itself (None: an external one, or none yet)."""
        return self.broker if isinstance(self.broker, LocalKafka) else None

    def log_path(self, name: str) -> Path:
        """The log of process ``name`` (``kafka``: the local broker's)."""
        local = self._local_broker()
        if name == "kafka" and local is not None and local.workdir is not None:
            return local.workdir / "kafka.log"
        return self.log_dir / f"{name}.log"

    def kill(self, name: str) -> None:
        """SIGKILL process ``name`` and reap it: a crash, with no chance to flush or commit anything."""
        proc = self.procs[name]
        proc.kill()
        proc.wait()

    def wait_healthy(self, timeout: float, name: str = "worker", every: float = 0.5) -> None:
        """Until process ``name`` answers ``/healthz`` with 200 and listens on its port, asking ``every`` seconds.
        Fails fast if any process of the stack exits, but one whose port was taken is started again on a fresh
        port (up to ``PORT_ATTEMPTS`` times)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_exits()
            try:
                status, _ = get_json(f"{self.url(name)}/healthz", timeout=2)
                if status == 200 and listens(self.procs[name].pid, self.ports[name]):
                    return
            except OSError:
                pass
            time.sleep(every)
        raise TimeoutError(f"{name} at {self.url(name)} not healthy after {timeout:.0f}s; see {self.log_path(name)}")

    def _check_exits(self) -> None:
        """Start again on a fresh port each process that exited because its port was taken; raise for any other
        exit."""
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                continue
            if proc.returncode != EXIT_PORT_TAKEN or self._moves.get(name, 0) >= PORT_ATTEMPTS:
                raise RuntimeError(children.describe_exit(name, proc, self.log_path(name)))
            self._moves[name] = self._moves.get(name, 0) + 1
            taken = self.ports[name]
            self._held.pop(taken).close()
            log.warning("%s: port %d was taken before it could bind it; starting it again on another", name, taken)
            self._launch(name, self._hold(0))

    def watch(self, every: float = 0.5) -> str:
        """Block until a process of the stack (the local broker's included, as ``kafka``) exits; its name."""
        while True:
            running = dict(self.procs)
            local = self._local_broker()
            if local is not None and local.proc is not None:
                running["kafka"] = local.proc
            for name, proc in running.items():
                if proc.poll() is not None:
                    return name
            time.sleep(every)

    def describe_exit(self, name: str) -> str:
        """How process ``name`` (as :meth:`watch` names it) ended, with the last lines of its log."""
        if name == "kafka":
            local = self._local_broker()
            assert local is not None and local.proc is not None, "watch names kafka only for the stack's own broker"
            proc = local.proc
        else:
            proc = self.procs[name]
        return children.describe_exit(name, proc, self.log_path(name))

    def stats(self, fresh: bool = False) -> dict:
        return get_json(f"{self.worker_url}/v1/stats" + ("?fresh=1" if fresh else ""), timeout=60)[1]

    def stop(self) -> None:
        """Stop the workers and the trainer together (SIGTERM, SIGKILL after ``STOP_GRACE_S``), then the local
        broker (``BROKER_GRACE_S``); release the ports."""
        children.stop(self.procs.values(), STOP_GRACE_S)
        self.procs.clear()
        if self.broker is not None:
            self.broker.stop(BROKER_GRACE_S)
            self.broker = None
        for sock in self._held.values():
            sock.close()
        self._held.clear()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
