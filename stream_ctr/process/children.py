"""Child processes that die with their parent: the broker, workers and trainers that stream-ctr starts.

:func:`start` runs a command with its output appended to a log file, in a session of its own (a Ctrl-C in the
terminal reaches only the parent, which stops its children in order) and, on Linux, with ``PR_SET_PDEATHSIG``:
the kernel SIGKILLs the child as soon as the parent is gone, so a parent killed with SIGKILL, which can stop
nothing itself, leaves no child running. The kernel sends that signal when the *thread* that started the child
exits, so only children started from the main thread are tied (one started from another thread would die with
that thread). :func:`stop` ends several children together; :func:`describe_exit` says how one ended.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

__all__ = ["describe_exit", "die_with_parent", "log_tail", "start", "stop"]

_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child between fork and exec only calls it
except (AttributeError, OSError):  # not Linux
    _prctl = None


def _tie_to_parent():
    """The ``preexec_fn`` that ties a child to this process, or None where it cannot be tied."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return _tie_to_parent_of(os.getpid())


def _tie_to_parent_of(parent: int):
    if _prctl is None:
        return None

    def tie() -> None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the prctl: no signal will come
            os.kill(os.getpid(), signal.SIGKILL)

    return tie


def die_with_parent() -> None:
    """Tie this process to its parent (for children started by code that is not ours, like torch's elastic
    agent): SIGKILL as soon as the parent is gone."""
    tie = _tie_to_parent_of(os.getppid())
    if tie is not None:
        tie()


def start(argv: list[str], log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Run ``argv`` with stdout and stderr appended to ``log``, in its own session, killed when this process
    exits (see the module doc)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_tie_to_parent()
        )


def stop(procs: Iterable[subprocess.Popen], grace: float) -> None:
    """SIGTERM every process still running, all at once; SIGKILL those still running ``grace`` seconds later.
    Every one is reaped on return."""
    running = [p for p in procs if p.poll() is None]
    for proc in running:
        proc.terminate()
    deadline = time.monotonic() + grace
    for proc in running:
        try:
            proc.wait(max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_tail(log: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of ``log`` ("" when there is none)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - 64 * 1024, 0))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def describe_exit(name: str, proc: subprocess.Popen, log: Path, lines: int = 20) -> str:
    """``name (pid N) exited with code C`` (or ``was killed by SIGNAL``) and the last ``lines`` of its ``log``."""
    code = proc.returncode
    if code is not None and code < 0:
        try:
            how = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
    else:
        how = f"exited with code {code}"
    return f"{name} (pid {proc.pid}) {how}; last lines of {log}:\n{log_tail(log, lines)}"
