"""A bandit experiment on the real broker: a real worker process registers epoch 0, ``stream-ctr ab bandit --once``
(the CLI, a real process) counts the clicks per arm on ``ctr.exposures`` and ``ctr.events`` and publishes epoch 1
with the weights moved to the arm that got the clicks (audited; a second run publishes nothing), the worker
switches to it, and its exposures carry the new epoch's arms and propensities."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import orjson
import pytest

from stream_ctr import topics
from stream_ctr.bench.state import publish_v0
from stream_ctr.broker.connection import Kafka
from stream_ctr.broker.read import read_topic
from stream_ctr.contracts.arms import ARMS
from stream_ctr.contracts.events import Event, encode_event
from stream_ctr.experiments.registry import history, last_definition
from stream_ctr.service.stack import Stack, get_json
from stream_ctr.serving.client import ScoringClient

pytestmark = pytest.mark.broker

#: Clicks out of 60 impressions per arm in epoch 0: ft is clearly the best.
CLICKS = {"global": 12, "ft": 48, "ft_lc": 12}
SHOWN = 60


def _cli(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings.to_env()}
    return subprocess.run(
        [sys.executable, "-m", "stream_ctr.cli", "ab", *args], env=env, capture_output=True, text=True, timeout=120
    )


def _epoch_zero_log(settings, name: str, start: float) -> None:
    """Exposures served in epoch 0 (one item each) and the events answering them, all timestamped before epoch
    1's boundary (``start + 60``), ``CLICKS[arm]`` of them clicks."""
    producer = Kafka.of(settings).producer(acks="all")
    try:
        for arm in ARMS:
            for n in range(SHOWN):
                user, rid, ts = f"{arm}-user-{n}", f"zero-{arm}-{n}", start + 20 + n / 10
                exposure = {"request_id": rid, "user_id": user, "arm": arm, "experiment": name, "in_experiment": True,
                            "model_version": 0, "ts": ts, "propensity": 1 / 3,
                            "items": [{"item_id": "i1", "score": 0.5, "position": 0}]}  # fmt: skip
                producer.send(topics.exposures(settings).name, key=user.encode(), value=orjson.dumps(exposure))
                event = Event(f"ev-{rid}", user, "i1", ts + 5, int(n < CLICKS[arm]), {"category": "c1"}, rid)
                producer.send(
                    topics.events(settings).name,
                    key=user.encode(),
                    value=encode_event(event),
                    timestamp_ms=int((ts + 5) * 1000),
                )
        producer.flush()
    finally:
        producer.close()


def _wait_for_epoch(url: str, epoch: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        running = get_json(f"{url}/v1/experiments")[1]["experiments"][0]
        if running.get("bandit", {}).get("epoch") == epoch:
            return running
        assert time.monotonic() < deadline, f"the worker still runs {running.get('bandit')}"
        time.sleep(0.5)


def _exposures(settings, prefix: str, count: int, timeout: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = [orjson.loads(m.value) for m in read_topic(settings, topics.exposures(settings).name)]
        found = [r for r in found if r["request_id"].startswith(prefix)]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"{len(found)} of {count} exposures logged"
        time.sleep(1.0)


def test_the_allocator_moves_the_weights_and_a_real_worker_serves_and_logs_the_new_epoch(settings_factory, tmp_path):
    start = time.time() - 90  # epoch 1 (cadence 60 s) is due: its boundary was 30 s ago
    name, path = "tl-bandit", tmp_path / "bandit.json"
    arms = [{"name": arm, "weight": 1} for arm in ARMS]
    bandit = {"cadence_s": 60, "floor": 0.05, "prior": [1, 1], "start_ts": start}
    path.write_text(json.dumps({"name": name, "salt": "s1", "arms": arms, "bandit": bandit}))
    settings = settings_factory(experiment_file=str(path), experiment_poll_s=0.5)
    with Stack(settings, tmp_path / "logs", trainer=False, worker=False) as stack:
        s, topic = stack.settings, topics.experiments(stack.settings).name
        publish_v0(s)  # a model to score with, without a trainer
        stack.spawn("worker")
        _epoch_zero_log(s, name, start)
        stack.wait_healthy(120)
        zero = last_definition(s, topic, name)  # registered by the worker at its start
        assert zero is not None and zero.epoch == 0 and zero.bandit.start_ts == start
        assert _wait_for_epoch(stack.worker_url, 0)["salt"] == "s1"

        out = _cli(s, "bandit", "--once")
        assert out.returncode == 0, out.stderr[-3000:]
        one = last_definition(s, topic, name)
        assert one is not None and one.epoch == 1 and json.loads(out.stdout) == one.to_dict()
        assert one.weights["ft"] >= 0.85 and one.weights["global"] == one.weights["ft_lc"] == 0.05
        (audit,) = history(s, topic, name)
        assert (audit["action"], audit["epoch"]) == ("epoch", 1)
        assert audit["weights_before"] == dict.fromkeys(ARMS, 1.0)
        assert audit["weights_after"] == pytest.approx(one.weights)
        assert audit["counts"] == {arm: {"clicks": CLICKS[arm], "impressions": SHOWN} for arm in ARMS}
        again = _cli(s, "bandit", "--once")  # a second allocator: the epoch is published already
        assert again.returncode == 0 and json.loads(again.stdout) is None, again.stderr[-3000:]
        assert last_definition(s, topic, name) == one and len(history(s, topic, name)) == 1

        _wait_for_epoch(stack.worker_url, 1)
        client = ScoringClient(stack.worker_url)
        users = [f"viewer-{n}" for n in range(40)]
        candidates = [{"item_id": f"i{k}", "features": {"category": f"c{k}"}} for k in range(5)]
        answers = {u: client.score({"user_id": u, "request_id": f"one-{u}", "candidates": candidates}) for u in users}
        assert all(answers[u]["arm"] == one.assign(u).arm for u in users)
        logged = _exposures(s, "one-", len(users))
        for record in logged:
            assert record["arm"] == one.assign(record["user_id"]).arm and record["experiment"] == name
            assert record["propensity"] == pytest.approx(one.propensity(record["arm"]))
        assert sum(r["arm"] == "ft" for r in logged) >= 28  # about 90% of them
