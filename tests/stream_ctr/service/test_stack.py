"""``stream-ctr up`` (:class:`stream_ctr.service.stack.Stack` behind the CLI) on the real broker: it runs the service,
stops everything within seconds on Ctrl-C or SIGTERM, leaves nothing running when it is SIGKILLed, notices a
process of its own that dies, and comes up on other ports when its ports are taken, however late.

Every process these tests signal is one they started, or a child of one, found by PID under it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream_ctr.process.net import listens
from stream_ctr.service.stack import Stack, get_json

pytestmark = pytest.mark.broker


def _descendants(pid: int) -> list[int]:
    """Every process under ``pid``, children first (from ``/proc/<pid>/task/*/children``)."""
    found, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _role(pid: int) -> str:
    """``worker``/``trainer`` for ``python -m stream_ctr.cli <role>``, ``kafka`` for the broker's JVM."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").rstrip("\0").split("\0")
    except OSError:
        return ""
    return "kafka" if "kafka.Kafka" in argv else argv[-1]


def _start_up(tmp_path: Path, env: dict, *args: str) -> tuple[subprocess.Popen, dict[str, str]]:
    """``stream-ctr up *args`` ready: its process and the URLs it printed (``worker``, ``trainer``, ``scorerN``)."""
    out = tmp_path / "up.out"
    # Ctrl-C's default disposition in the child: a test run started in the background of a non-interactive shell
    # ignores SIGINT, and a child would inherit that and never see the Ctrl-C a test sends.
    up = subprocess.Popen(
        [sys.executable, "-m", "stream_ctr.cli", "up", "--logs", str(tmp_path / "logs"), *args],
        env=env,
        stdout=open(out, "wb"),  # noqa: SIM115 (the child keeps it; closed with the test's tmp_path)
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 150
    while "Ctrl-C stops everything" not in (text := out.read_text(errors="replace")):
        if up.poll() is not None or time.monotonic() > deadline:
            up.kill()
            raise AssertionError(f"stream-ctr up did not become ready:\n{text[-3000:]}")
        time.sleep(0.3)
    return up, dict(re.findall(r"^(worker|trainer|scorer\d+) +(http://\S+)", text, re.M))


def _cleanup(up: subprocess.Popen, pids: list[int]) -> None:
    """After a failed test: SIGKILL ``up`` and whatever it started that is still running, by PID."""
    for pid in [up.pid, *pids]:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    up.wait()


@pytest.fixture
def up_env(settings_factory):
    """``up_env(**overrides)``: the environment of an ``up`` on fresh topics (``kafka_bootstrap=""``: its own
    broker)."""
    return lambda **overrides: {**os.environ, **settings_factory(**overrides).to_env()}


def test_up_runs_the_service_and_ctrl_c_stops_everything_it_started(up_env, tmp_path):
    up, urls = _start_up(tmp_path, up_env(), "--scorers", "1")
    kids = _descendants(up.pid)
    try:
        assert sorted(_role(k) for k in kids) == ["scorer", "trainer", "worker"]
        assert get_json(f"{urls['scorer1']}/healthz")[0] == 200
        assert get_json(f"{urls['worker']}/healthz")[0] == 200
        assert get_json(f"{urls['worker']}/v1/stats")[1]["applied"] == 0
        assert get_json(f"{urls['trainer']}/healthz")[0] == 200
        started = time.monotonic()
        up.send_signal(signal.SIGINT)  # Ctrl-C
        assert up.wait(10) == 0
        assert time.monotonic() - started < 10
    finally:
        _cleanup(up, kids)
    assert not [k for k in kids if _alive(k)]
    for url in urls.values():  # worker, scorer and trainer are gone, their ports free
        with pytest.raises(OSError):
            get_json(f"{url}/healthz", timeout=2)


def test_sigterm_stops_up_and_everything_it_started_within_10_seconds(up_env, tmp_path):
    up, _ = _start_up(tmp_path, up_env(kafka_bootstrap=""))
    kids = _descendants(up.pid)
    try:
        assert sorted(_role(k) for k in kids) == ["kafka", "trainer", "worker"]
        started = time.monotonic()
        up.send_signal(signal.SIGTERM)
        assert up.wait(10) == 0
        took = time.monotonic() - started
    finally:
        _cleanup(up, kids)
    assert took < 10 and not [k for k in kids if _alive(k)], (took, kids)
    print(f"SIGTERM: up and its {len(kids)} processes stopped in {took:.1f} s")


def test_sigkill_of_up_leaves_none_of_its_processes_running(up_env, tmp_path):
    up, _ = _start_up(tmp_path, up_env(kafka_bootstrap=""))
    kids = _descendants(up.pid)
    try:
        assert sorted(_role(k) for k in kids) == ["kafka", "trainer", "worker"]
        up.kill()  # no chance to stop anything itself
        up.wait()
        killed, deadline = time.monotonic(), time.monotonic() + 5
        while (left := [k for k in kids if _alive(k)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        took = time.monotonic() - killed
    finally:
        _cleanup(up, kids)
    assert not left, f"still running 5 s after up was killed: {[(k, _role(k)) for k in left]}"
    print(f"SIGKILL of up: its {len(kids)} processes gone after {took:.2f} s")


def test_up_notices_a_process_of_its_own_that_dies_names_it_and_stops_the_rest(up_env, tmp_path):
    up, _ = _start_up(tmp_path, up_env())
    kids = _descendants(up.pid)
    try:
        worker = next(k for k in kids if _role(k) == "worker")
        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        assert up.wait(15) == 1
        took = time.monotonic() - killed
    finally:
        _cleanup(up, kids)
    out = (tmp_path / "up.out").read_text()
    assert f"worker (pid {worker}) was killed by SIGKILL" in out, out[-3000:]
    assert "last lines of" in out and "worker is gone; stopping the rest" in out
    assert took < 10 and not [k for k in kids if _alive(k)], (took, kids)


def test_the_stack_comes_up_on_other_ports_when_its_ports_are_taken_early_or_late(
    settings_factory, tmp_path, monkeypatch
):
    """The worker's configured port is in use when the stack starts: it gets another at once. The trainer's is
    taken after the stack reserved it and before the trainer binds it (by a foreign process binding that very
    port with SO_REUSEADDR, which a reservation cannot stop): the trainer exits with EXIT_PORT_TAKEN and the
    stack starts it again on a fresh port. Both end up healthy where ``settings`` and ``url`` say."""
    import stream_ctr.service.stack as stack_module

    squatter = socket.create_server(("127.0.0.1", 0))  # in use from the start
    settings = settings_factory(web_port=squatter.getsockname()[1])
    thieves, reserve = [], stack_module.reserve_port

    def reserve_and_lose_it(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
        held = reserve(host, port)
        if port == settings.trainer_port and not thieves:
            thief = socket.socket()
            thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            thief.bind((host, held.getsockname()[1]))
            thief.listen()
            thieves.append(thief)
        return held

    monkeypatch.setattr(stack_module, "reserve_port", reserve_and_lose_it)
    try:
        with Stack(settings, tmp_path / "logs") as stack:
            assert thieves, "the trainer's port was not taken"
            assert stack.settings.web_port != settings.web_port
            assert stack.settings.trainer_port not in (settings.trainer_port, stack.settings.web_port)
            for name, port in (("worker", stack.settings.web_port), ("trainer", stack.settings.trainer_port)):
                assert stack.ports[name] == port and stack.url(name).endswith(f":{port}")
                assert get_json(f"{stack.url(name)}/healthz")[0] == 200
                assert listens(stack.procs[name].pid, port)
    finally:
        for sock in (squatter, *thieves):
            sock.close()
    assert "address already in use" in (tmp_path / "logs" / "trainer.log").read_text()
