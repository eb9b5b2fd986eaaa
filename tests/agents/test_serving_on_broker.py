"""The scoring API on real worker processes: bad requests over HTTP, routing between two workers, and the closed
loop end to end (exposures -> attributed events -> per-arm results that add up)."""

from __future__ import annotations

import time

import orjson
import pytest
from scoring_http import metric_sum, score_request

from stream_ctr import topics
from stream_ctr.broker.replay import replay
from stream_ctr.data.synthetic import SyntheticConfig
from stream_ctr.experiments.assignment import Experiment
from stream_ctr.experiments.report import read_results
from stream_ctr.experiments.simulate import SimConfig
from stream_ctr.service.closed_loop import run_closed_loop
from stream_ctr.service.stack import Stack, get_json
from stream_ctr.serving.client import ScoringClient
from stream_ctr.serving.scoring import MAX_BODY_BYTES

pytestmark = pytest.mark.broker

WORLD = SyntheticConfig(users=80, items=120, seed=5)


@pytest.fixture(scope="module")
def two_workers(settings_factory, make_events, tmp_path_factory):
    """Trainer + two personalize workers in one group, each owning some partitions; 2,000 events applied."""
    settings = settings_factory(delta_every=500)
    with Stack(settings, tmp_path_factory.mktemp("serving-logs")) as stack:
        stack.spawn("worker", "worker2")
        stack.wait_healthy(120, "worker2")
        urls = [stack.worker_url, stack.url("worker2")]
        events = make_events(users=40, events_per_user=50, seed=6).events
        replay(events, stack.settings.kafka_bootstrap, topics.events(stack.settings).name)
        deadline = time.monotonic() + 180
        while sum(get_json(f"{u}/v1/stats")[1]["applied"] for u in urls) < len(events):
            assert time.monotonic() < deadline, "workers did not apply the replay"
            time.sleep(0.5)
        yield stack, urls


def _results(url: str) -> dict:
    return get_json(f"{url}/v1/experiments")[1]["experiments"][0]["results_on_this_worker"]


def test_a_request_to_either_worker_gets_the_owners_answer(two_workers):
    _, urls = two_workers
    clients = [ScoringClient(u) for u in urls]
    before = [sum(a["requests"] for a in _results(u)["arms"].values()) for u in urls]
    users = [f"u{n}" for n in range(40)]
    sent = 0
    for user in users:
        for attempt in range(3):  # a new snapshot may land between the two requests: then ask both again
            a, b = (c.score(score_request(user, f"route-{user}-{attempt}-{i}")) for i, c in enumerate(clients))
            sent += 2
            if a["model_version"] == b["model_version"]:
                break
        assert {**a, "request_id": None} == {**b, "request_id": None}, user  # same arm, scores and version
        assert a["arm"] == Experiment.default().assign(user).arm
    after = [sum(a["requests"] for a in _results(u)["arms"].values()) for u in urls]
    served = [x - y for x, y in zip(after, before)]
    # Each request was scored once, by the owner: both workers own users, and together they served them all.
    assert sum(served) == sent and min(served) > 0, served


def test_bad_requests_over_http_are_4xx_with_a_message(two_workers):
    _, urls = two_workers
    client = ScoringClient(urls[0])
    cases = {
        b'{"user_id": "u1",': 400,
        b'{"user_id": "\xff"}': 400,
        b'{"user_id": "u1", "request_id": "r", "candidates": []}': 422,
        orjson.dumps({"user_id": "u1", "request_id": "r", "candidates": [{"item_id": "i"}] * 1001}): 422,
        b'{"user_id": "u", "request_id": "r", "candidates": [{"item_id": "i", "features": {"x": NaN}}]}': 422,
        b"x" * (MAX_BODY_BYTES + 10): 413,
    }
    for body, status in cases.items():
        got, answer = client.post(body)
        assert got == status and orjson.loads(answer)["error"], (body[:60], got, answer[:200])
    assert client.post(b"{}", path="/v1/nothing-here")[0] == 404
    assert get_json(f"{urls[0]}/v1/score")[0] == 405
    assert get_json(f"{urls[0]}/openapi.json")[1]["paths"]["/v1/score"]["post"]
    cold = client.score(score_request("brand-new-user", "cold-1"))
    assert len(cold["items"]) == 40 and cold["model_version"] >= 0


def test_closed_loop_per_arm_results_add_up_to_the_exposures_sent(two_workers):
    stack, urls = two_workers
    base = {
        name: sum(metric_sum(u, name) for u in urls)
        for name in ("stream_ctr_ab_requests_total", "stream_ctr_ab_impressions_total")
    }
    sim = SimConfig(requests=600, candidates=30, k=4, seed=3, start_ts=time.time())
    loop = run_closed_loop(stack.settings, sim, WORLD, url=urls[1])
    assert loop.report()["overall"]["requests"] == 600
    deadline = time.monotonic() + 120
    while (
        sum(metric_sum(u, "stream_ctr_ab_impressions_total") for u in urls)
        < base["stream_ctr_ab_impressions_total"] + 600 * 4
    ):
        assert time.monotonic() < deadline, "events of the closed loop were not all attributed"
        time.sleep(0.5)
    got = {name: sum(metric_sum(u, name) for u in urls) - base[name] for name in base}
    assert got == {"stream_ctr_ab_requests_total": 600, "stream_ctr_ab_impressions_total": 2400}
    assert sum(metric_sum(u, "stream_ctr_ab_unattributed_total") for u in urls) == 0
    # The report read back from the topics sees the same exposures and every attributed event.
    result = read_results(stack.settings, Experiment.default())
    sim_arms = loop.report()["arms"]
    impressions = {arm: m["impressions"] for arm, m in result["arms"].items()}
    assert sum(impressions.values()) == 2400
    for arm, m in sim_arms.items():
        assert impressions[arm] == m["impressions"] and result["arms"][arm]["clicks"] == m["clicks"], arm
    assert 0 <= result["srm"].p_value <= 1
