"""Child processes tied to their parent (:mod:`stream_ctr.process.children`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from stream_ctr.process import children

PARENT = """
import sys, time
from pathlib import Path
from stream_ctr.process import children
child = children.start(["sleep", "60"], Path(sys.argv[1]))
print(child.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_child_dies_with_its_parent_even_when_the_parent_is_sigkilled(tmp_path):
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path / "child.log")], stdout=subprocess.PIPE, text=True
    )
    child = int(parent.stdout.readline())
    try:
        assert _alive(child)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(child)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_stop_ends_all_together_and_sigkills_what_outlives_the_grace(tmp_path):
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    )
    procs = [children.start([sys.executable, "-c", stubborn], tmp_path / f"stubborn{i}.log") for i in range(2)]
    procs.append(children.start(["sleep", "60"], tmp_path / "sleep.log"))
    deadline = time.monotonic() + 30
    while not all("ready" in (tmp_path / f"stubborn{i}.log").read_text() for i in range(2)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    started = time.monotonic()
    children.stop(procs, grace=1.0)
    assert time.monotonic() - started < 2.0  # one grace for all, not one each
    assert [p.returncode for p in procs] == [-signal.SIGKILL, -signal.SIGKILL, -signal.SIGTERM]


def test_describe_exit_says_how_and_shows_the_log_tail(tmp_path):
    log = tmp_path / "x.log"
    proc = children.start([sys.executable, "-c", "print('\\n'.join(map(str, range(50)))); raise SystemExit(3)"], log)
    proc.wait()
    text = children.describe_exit("x", proc, log, lines=2)
    assert text == f"x (pid {proc.pid}) exited with code 3; last lines of {log}:\n48\n49"
    killed = children.start(["sleep", "60"], log)
    killed.kill()
    killed.wait()
    assert f"x (pid {killed.pid}) was killed by SIGKILL" in children.describe_exit("x", killed, log)
