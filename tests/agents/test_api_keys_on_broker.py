"""API keys on real worker processes: two workers in one group with STREAM_CTR_API_KEYS_FILE; every view asks for
its scope, routed requests (score and users) keep the caller's key, health and metrics stay open, and a bad keys
file stops a worker at start naming the setting."""

from __future__ import annotations

import hashlib
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

KEYS = {"scorer": "score", "reader": "read_users", "root": "admin"}


def _call(url: str, key: str | None = None, body: dict | None = None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = orjson.dumps(body) if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.fixture(scope="module")
def keyed(settings_factory, make_events, tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "api-keys"
    path.write_text("".join(f"{hashlib.sha256(k.encode()).hexdigest()} {s}\n" for k, s in KEYS.items()))
    settings = settings_factory(api_keys_file=str(path))
    with Stack(settings, tmp_path_factory.mktemp("keys-logs")) as stack:
        stack.spawn("worker", "worker2")
        stack.wait_healthy(120, "worker2")
        urls = [stack.worker_url, stack.url("worker2")]
        events = make_events(users=30, events_per_user=20, seed=8).events
        replay(events, stack.settings.kafka_bootstrap, topics.events(stack.settings).name)
        deadline = time.monotonic() + 120
        while True:
            applied = 0
            for u in urls:
                req = urllib.request.Request(f"{u}/v1/stats", headers={"Authorization": "Bearer root"})
                with urllib.request.urlopen(req, timeout=10) as resp:
                    applied += orjson.loads(resp.read())["applied"]
            if applied >= len(events):
                break
            assert time.monotonic() < deadline, "workers did not apply the replay"
            time.sleep(0.5)
        yield urls, sorted({e.user_id for e in events})


def test_each_view_asks_for_its_scope_on_either_worker(keyed):
    urls, users = keyed
    body = {"user_id": users[0], "candidates": [{"item_id": "i1", "features": {}}]}
    for url in urls:  # each user is owned by one of the two: the other forwards, with the caller's key
        for user in users[:6]:
            request = {**body, "user_id": user, "request_id": f"{url[-5:]}-{user}"}
            assert _call(f"{url}/v1/score", None, request) == 401
            assert _call(f"{url}/v1/score", "nobody", request) == 401
            assert _call(f"{url}/v1/score", "reader", request) == 403
            assert _call(f"{url}/v1/score", "scorer", request) == 200
            assert _call(f"{url}/v1/users/{user}", "scorer") == 403
            assert _call(f"{url}/v1/users/{user}", "reader") == 200
        assert _call(f"{url}/v1/experiments", "scorer") == 403 and _call(f"{url}/v1/experiments", "root") == 200
        assert _call(f"{url}/healthz") == 200 and _call(f"{url}/metrics") == 200  # open: probes and Prometheus


def test_a_bad_keys_file_stops_a_worker_at_start_naming_the_setting(settings_factory, tmp_path):
    path = tmp_path / "api-keys"
    path.write_text("not a key line\n")
    env = {**settings_factory(api_keys_file=str(path)).to_env(), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "stream_ctr.cli", "worker"], env=env, capture_output=True, timeout=120)
    assert run.returncode == 2, run.stderr[-2000:]
    assert b"STREAM_CTR_API_KEYS_FILE" in run.stderr and b"api-keys:1" in run.stderr
