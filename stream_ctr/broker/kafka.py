"""The Kafka broker behind one interface: a local Apache Kafka (KRaft, single node) or an existing one.

:class:`LocalKafka` resolves the broker jars from Maven Central with the pom beside this file (once; they are
cached in ``~/.cache/stream-ctr/kafka-<version>``, outside any clone), formats a fresh log dir in a temp
directory, starts the broker on 127.0.0.1 on ports it holds from the pick until it stops (so no other process
can take them, :mod:`stream_ctr.process.net`, and a restarted broker finds them again), waits until it answers metadata
requests, and stops it cleanly. The broker dies with the process that started it (:mod:`stream_ctr.process.children`).
:func:`broker_for` picks it or an :class:`ExternalKafka` from ``KAFKA_BOOTSTRAP``: that is the one line
to change for another broker.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from kafka.errors import KafkaError

from stream_ctr.broker import preflight
from stream_ctr.broker.connection import Kafka, KafkaTarget
from stream_ctr.process import children
from stream_ctr.process.net import reserve_port
from stream_ctr.topics import MAX_RECORD_BYTES

__all__ = [
    "BrokerUnreachable",
    "ExternalKafka",
    "LocalKafka",
    "broker_for",
    "ensure_jars",
    "require_broker",
    "wait_ready",
]


class BrokerUnreachable(TimeoutError):
    """No broker answered at the bootstrap address in time; the message says where and why."""


KAFKA_VERSION = "4.1.1"
_HERE = Path(__file__).parent


def cache_root() -> Path:
    return Path(os.environ.get("STREAM_CTR_CACHE", Path.home() / ".cache" / "stream-ctr"))


def ensure_jars(version: str = KAFKA_VERSION) -> Path:
    """The directory of broker jars, resolving them with Maven on first use."""
    libs = cache_root() / f"kafka-{version}" / "libs"
    if (libs / ".complete").exists():
        return libs
    if shutil.which("mvn") is None:
        raise RuntimeError("Maven (mvn) is needed once to fetch the Kafka jars from Maven Central")
    tmp = libs.with_name(f"libs.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(_HERE / "pom.xml"),
        f"-Dkafka.version={version}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}",
        "-DincludeScope=runtime",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"mvn could not resolve Kafka {version}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    (tmp / ".complete").touch()
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    return libs


class ExternalKafka:
    """A broker someone else runs (with its security, :mod:`.connection`): start and stop do nothing."""

    def __init__(self, kafka: KafkaTarget):
        self.kafka = Kafka.of(kafka)
        self.bootstrap = self.kafka.bootstrap

    def start(self, timeout: float = 60.0) -> ExternalKafka:
        require_broker(self.kafka, timeout)
        return self

    def stop(self, timeout: float = 0.0) -> None:
        pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class LocalKafka:
    """Apache Kafka in KRaft mode, one process that is both broker and controller, on 127.0.0.1."""

    def __init__(self, version: str = KAFKA_VERSION, heap: str = "512m"):
        self.version, self.heap = version, heap
        self.port = self.controller_port = 0
        self.workdir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self._held: list[socket.socket] = []  # the reservations of the two ports, until stop

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def kafka(self) -> Kafka:
        """How this broker's own checks connect to it (a secured subclass connects as its super user)."""
        return Kafka(self.bootstrap)

    def _config(self, workdir: Path) -> dict[str, str]:
        """The broker's ``server.properties``, with the ports reserved (a subclass adds listeners)."""
        self._held = [reserve_port(), reserve_port()]
        self.port, self.controller_port = (sock.getsockname()[1] for sock in self._held)
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(workdir / "data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "message.max.bytes": str(MAX_RECORD_BYTES),
            "log.cleaner.backoff.ms": "1000",
        }

    def _format_options(self) -> list[str]:
        """Extra options of ``StorageTool format`` (a subclass adds SCRAM users)."""
        return []

    def _write_config(self, workdir: Path) -> Path:
        path = workdir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in self._config(workdir).items()))
        return path

    def _java(self) -> list[str]:
        return [
            "java",
            f"-Xmx{self.heap}",
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={_HERE / 'log4j2.properties'}",
            "-cp",
            f"{ensure_jars(self.version)}/*",
        ]

    def start(self, timeout: float = 90.0) -> LocalKafka:
        workdir = self.workdir = Path(tempfile.mkdtemp(prefix="stream-ctr-kafka-"))
        config = self._write_config(workdir)
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # --cluster-id=ID, not "-t ID": a random id may start with "-" and would be read as an option.
        fmt = subprocess.run(
            [
                *self._java(),
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={cluster_id}",
                "-c",
                str(config),
                *self._format_options(),
            ],
            capture_output=True,
            text=True,
        )
        if fmt.returncode != 0:
            self.stop()
            raise RuntimeError(f"formatting Kafka storage failed: {fmt.stdout}{fmt.stderr}")
        return self._launch(workdir, timeout)

    def _launch(self, workdir: Path, timeout: float) -> LocalKafka:
        # Its own session: a Ctrl-C in a terminal reaches only us, and we stop the broker in order.
        self.proc = children.start(
            [*self._java(), "kafka.Kafka", str(workdir / "server.properties")], workdir / "kafka.log"
        )
        try:
            wait_ready(self.kafka, timeout, self.proc)
        except (RuntimeError, TimeoutError) as exc:
            tail = self.log_tail()
            self.stop()
            raise RuntimeError(f"{exc}\n--- last lines of the broker log ---\n{tail}") from exc
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL the broker, keeping its log dir (a crash: unflushed page cache aside, the data stays)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def restart(self, timeout: float = 90.0) -> LocalKafka:
        """Start the broker again on the same log dir and ports, after :meth:`kill` (log recovery included)."""
        assert self.workdir is not None and (self.proc is None or self.proc.poll() is not None), "not stopped"
        return self._launch(self.workdir, timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the broker (SIGKILL after ``timeout`` seconds), release its ports, delete its log dir."""
        if self.proc is not None:
            children.stop([self.proc], timeout)
        self.proc = None
        for sock in self._held:
            sock.close()
        self._held = []
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def log_tail(self, n: int = 40) -> str:
        return children.log_tail(self.workdir / "kafka.log", n) if self.workdir is not None else ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def wait_ready(kafka: KafkaTarget, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Block until the broker answers a metadata request (or fail with the reason)."""
    kafka = Kafka.of(kafka)
    bootstrap = kafka.bootstrap
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    kafka_log = logging.getLogger("kafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)  # connection refusals are expected until the broker listens
    try:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"Kafka exited with code {proc.returncode} while starting")
            if not _listening(bootstrap):  # cheap: kafka-python retries a closed port for half a minute
                last = ConnectionRefusedError(f"nothing listens at {bootstrap}")
                time.sleep(0.5)
                continue
            try:
                admin = kafka.admin(request_timeout_ms=3000)
                try:
                    admin.list_topics()
                    return
                finally:
                    admin.close()
            except (KafkaError, OSError) as exc:
                last = exc
                time.sleep(0.5)
    finally:
        kafka_log.setLevel(level)
    raise BrokerUnreachable(
        f"cannot reach Kafka at {bootstrap} within {timeout:.0f}s ({last or 'no answer'}); "
        "is KAFKA_BOOTSTRAP right and the broker up?"
    )


def _listening(bootstrap: str) -> bool:
    """Whether any ``host:port`` of ``bootstrap`` accepts a TCP connection."""
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=1.0).close()
            return True
        except (OSError, ValueError):
            continue
    return False


def require_broker(
    kafka: KafkaTarget, timeout: float = 5.0, topics: tuple[str, ...] = (), groups: tuple[str, ...] = ()
) -> None:
    """Fail fast, in one line, when the configured broker does not answer, refuses this process's credentials or
    certificate, or denies it ``topics`` or ``groups`` (:mod:`.preflight`; every command calls this first)."""
    kafka = Kafka.of(kafka)
    deadline = time.monotonic() + timeout
    while not _listening(kafka.bootstrap):
        if time.monotonic() > deadline:
            raise BrokerUnreachable(
                f"cannot reach Kafka at {kafka.bootstrap} within {timeout:.0f}s (nothing listens there); "
                "is KAFKA_BOOTSTRAP right and the broker up?"
            )
        time.sleep(0.5)
    preflight.check(kafka, topics, groups, timeout=max(timeout, 10.0))


def broker_for(kafka: KafkaTarget = "") -> LocalKafka | ExternalKafka:
    """``KAFKA_BOOTSTRAP`` set: use that broker (with the settings' security); empty: start a local one."""
    return ExternalKafka(kafka) if Kafka.of(kafka).bootstrap else LocalKafka()
