"""Broker tier: real Kafka, real worker and trainer processes, real replay."""

from __future__ import annotations

import time
import urllib.request
from collections import Counter

import pytest
from kafka import KafkaConsumer

import topics
from stream_ctr.data import SyntheticConfig, generate_synthetic
from stream_ctr.events import parse_event, InvalidEvent
from stream_ctr.replay import MALFORMED_SAMPLES, replay
from stream_ctr.stack import Stack, get_json

pytestmark = pytest.mark.broker


def _wait_for(stack: Stack, applied: int, dead: int, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = stack.stats()
        if s["applied"] >= applied and s["dead_letters"] >= dead:
            return s
        time.sleep(0.5)
    raise AssertionError(f"worker stuck at {s['applied']}/{applied} applied, {s['dead_letters']}/{dead} dead")


def _expected_counts(events):
    n, clicks = Counter(), Counter()
    for e in events:
        n[e.user_id] += 1
        clicks[e.user_id] += e.label
    return n, clicks


def _dead_letters(settings, expect: int) -> list:
    consumer = KafkaConsumer(topics.dead_letters(settings).name, bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=10000, group_id=None)
    records = []
    try:
        for msg in consumer:
            records.append(msg)
            if len(records) >= expect:
                break
    finally:
        consumer.close()
    return records


def test_replay_through_real_worker_counts_exactly_and_dead_letters(settings_factory, tmp_path):
    settings = settings_factory()
    events = generate_synthetic(SyntheticConfig(users=60, events_per_user=50, seed=7)).events  # 3000
    first, second = events[:2400], events[2400:]
    with Stack(settings, tmp_path / "logs") as stack:
        sent, bad = replay(first, stack.settings.kafka_bootstrap, topics.events(settings).name, malformed_every=400)
        assert (sent, bad) == (2400, 6)
        stats = _wait_for(stack, 2400, 6)
        assert stats["applied"] == 2400 and stats["dead_letters"] == 6

        # Every malformed record is on the dead-letter topic, raw bytes intact, with its reason.
        # Order across source partitions is not defined (the bad records have different keys), so match by value.
        dlq = {m.value: m for m in _dead_letters(stack.settings, 6)}
        assert sorted(dlq) == sorted(v for _, v in MALFORMED_SAMPLES)
        for key, value in MALFORMED_SAMPLES:
            msg = dlq[value]
            headers = dict(msg.headers)
            with pytest.raises(InvalidEvent) as err:
                parse_event(value, key)
            assert headers["reason"].decode() == err.value.reason
            assert headers["topic"].decode() == topics.events(settings).name
            assert msg.key == key

        stack.stats(fresh=True)  # gAUC is recomputed on a timer; this recomputes it now
        with urllib.request.urlopen(f"{stack.worker_url}/metrics") as resp:
            text = resp.read().decode()
        assert 'stream_ctr_dead_letter_total{reason="not_json"} 1.0' in text
        assert 'stream_ctr_events_total{outcome="applied"} 2400.0' in text
        assert 'stream_ctr_arm_gauc{arm="ft_lc",scope="lifetime"}' in text
        assert not any(f'"{e.user_id}"' in text for e in first)  # never a user id in a label

        # Restart the worker: state comes back from the changelog, nothing is counted twice.
        stack.procs.pop("worker").terminate()
        time.sleep(1)
        stack.spawn("worker")
        stack.wait_healthy(120)
        replay(second, stack.settings.kafka_bootstrap, topics.events(settings).name)
        _wait_for(stack, 0, 0)
        deadline = time.monotonic() + 180
        n, clicks = _expected_counts(events)
        while time.monotonic() < deadline:
            got = {u: get_json(f"{stack.worker_url}/v1/users/{u}")[1].get("events") for u in n}
            if got == dict(n):
                break
            time.sleep(1)
        for uid in n:
            status, body = get_json(f"{stack.worker_url}/v1/users/{uid}")
            assert status == 200
            assert (body["events"], body["clicks"]) == (n[uid], clicks[uid]), uid
            assert body["last_applied_offset"] >= 0 and body["head_norm"]["ft_lc"] > 0

        status, body = get_json(f"{stack.worker_url}/v1/users/nobody-here")
        assert status == 404 and "unknown user" in body["error"]



def test_up_runs_the_service_and_ctrl_c_stops_everything_it_started(settings_factory, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    settings = settings_factory()
    env = {**os.environ, "KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "STREAM_CTR_TOPIC_PREFIX": settings.topic_prefix,
           "STREAM_CTR_APP_ID": settings.app_id, "STREAM_CTR_WEB_PORT": str(settings.web_port),
           "STREAM_CTR_FEATURES": settings.features}
    out = open(tmp_path / "up.out", "wb")
    up = subprocess.Popen([sys.executable, "-m", "stream_ctr.cli", "up", "--logs", str(tmp_path)], env=env,
                          stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{settings.web_port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if "Ctrl-C stops everything" in (tmp_path / "up.out").read_text(errors="replace"):
                break
            assert up.poll() is None, (tmp_path / "up.out").read_text()[-2000:]
            time.sleep(0.5)
        else:
            raise AssertionError("stream-ctr up did not become ready")
        assert get_json(f"{url}/healthz")[0] == 200
        assert get_json(f"{url}/v1/stats")[1]["applied"] == 0
        up.send_signal(signal.SIGINT)  # Ctrl-C
        assert up.wait(60) == 0
    finally:
        if up.poll() is None:
            up.kill()
    for port in (settings.web_port, settings.web_port + 1):  # worker and trainer are gone, their ports free
        with pytest.raises(OSError):
            get_json(f"http://127.0.0.1:{port}/healthz", timeout=2)
