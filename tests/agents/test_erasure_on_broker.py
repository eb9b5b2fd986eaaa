"""Erasure on real worker processes: ``DELETE /v1/users/{id}`` (and ``stream-ctr users delete``) removes a user's
state from its owner and writes a tombstone to the users table's changelog, so neither a restart of the worker
(SIGKILL) nor a second worker taking some of the partitions brings the user back."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request

import orjson
import pytest

from stream_ctr import topics
from stream_ctr.broker.replay import replay
from stream_ctr.service.stack import Stack

pytestmark = pytest.mark.broker


def _call(url: str, method: str = "GET") -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, {}


def _status_until(url: str, wanted: int, timeout: float = 120.0) -> None:
    """Ask ``url`` until it answers ``wanted`` (a worker recovering its table answers otherwise for a while)."""
    deadline = time.monotonic() + timeout
    while (status := _call(url)[0]) != wanted:
        assert time.monotonic() < deadline, f"{url} still answers {status}, not {wanted}"
        time.sleep(0.5)


def test_an_erased_user_stays_gone_after_a_restart_and_a_rebalance(settings_factory, make_events, tmp_path):
    events = make_events(users=24, events_per_user=10, seed=12).events
    users = sorted({e.user_id for e in events})
    erased, kept = users[:8], users[8:]
    with Stack(settings_factory(), tmp_path / "logs") as stack:
        replay(events, stack.settings.kafka_bootstrap, topics.events(stack.settings).name)
        for user in users:
            _status_until(f"{stack.worker_url}/v1/users/{user}", 200)

        for user in erased[:4]:
            status, answer = _call(f"{stack.worker_url}/v1/users/{user}", "DELETE")
            assert status == 200 and answer["erased"] and answer["metric_records"] > 0
        for user in erased[4:]:  # the command line does the same through any worker
            out = subprocess.run(
                [sys.executable, "-m", "stream_ctr.cli", "users", "delete", user, "--url", stack.worker_url],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0, out.stderr
            assert orjson.loads(out.stdout)["erased"]
        assert _call(f"{stack.worker_url}/v1/users/{erased[0]}", "DELETE")[1]["erased"] is False  # idempotent
        for user in erased:
            assert _call(f"{stack.worker_url}/v1/users/{user}")[0] == 404

        stack.kill("worker")  # no flush, no commit: the table comes back from its changelog alone
        stack.spawn("worker")
        stack.wait_healthy(120)
        for user in kept:
            _status_until(f"{stack.worker_url}/v1/users/{user}", 200)
        assert all(_call(f"{stack.worker_url}/v1/users/{user}")[0] == 404 for user in erased)

        stack.spawn("worker", "worker2")  # takes some partitions, and their users' state from the changelog
        stack.wait_healthy(120, "worker2")
        for url in (stack.worker_url, stack.url("worker2")):
            for user in kept:
                _status_until(f"{url}/v1/users/{user}", 200)
            assert all(_call(f"{url}/v1/users/{user}")[0] == 404 for user in erased)
