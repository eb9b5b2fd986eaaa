"""A scorer process (``stream-ctr scorer``) beside a real worker and trainer: it ranks every user as the user's
worker does (the same model version, the heads read from the users changelog), follows an erasure, answers bad
requests 4xx, and the exposures it serves are attributed by the user's worker (the closed loop end to end)."""

from __future__ import annotations

import time
import urllib.request

import orjson
import pytest
from scoring_http import metric_sum, score_request

from stream_ctr import topics
from stream_ctr.broker.replay import replay
from stream_ctr.data.synthetic import SyntheticConfig
from stream_ctr.experiments.assignment import Experiment
from stream_ctr.experiments.simulate import SimConfig
from stream_ctr.service.closed_loop import run_closed_loop
from stream_ctr.service.stack import Stack, get_json
from stream_ctr.serving.client import ScoringClient
from stream_ctr.serving.scoring import MAX_BODY_BYTES

pytestmark = pytest.mark.broker

USERS = [f"u{n}" for n in range(40)]


@pytest.fixture(scope="module")
def stack(settings_factory, make_events, tmp_path_factory):
    """Trainer, worker and one scorer; 2,000 events of 40 users applied before the scorer starts. Models that
    every process can hold identically: deltas carry the dense layers too, and the worker takes no catch-up steps
    (the scorer serves the trainer's model as published)."""
    settings = settings_factory(delta_every=500, dense_every=1, catch_up_events=0)
    with Stack(settings, tmp_path_factory.mktemp("scorer-logs")) as stack:
        events = make_events(users=40, events_per_user=50, seed=6).events
        replay(events, stack.settings.kafka_bootstrap, topics.events(stack.settings).name)
        deadline = time.monotonic() + 180
        while get_json(f"{stack.worker_url}/v1/stats")[1]["applied"] < len(events):
            assert time.monotonic() < deadline, "the worker did not apply the replay"
            time.sleep(0.5)
        stack.spawn("scorer", "scorer")
        stack.wait_healthy(120, "scorer")
        yield stack


def _agree(clients, user: str, tag: str, attempts: int = 40) -> tuple[dict, dict]:
    """The worker's and the scorer's answers for ``user``, asked again (a moment later) until they rank with the
    same model version and the same head, or ``attempts`` run out."""
    for attempt in range(attempts):
        a, b = (c.score(score_request(user, f"{tag}-{user}-{attempt}-{i}")) for i, c in enumerate(clients))
        a["request_id"] = b["request_id"] = None
        if a == b:
            break
        time.sleep(0.25)
    return a, b


def test_a_scorer_ranks_every_user_as_the_users_worker(stack):
    clients = [ScoringClient(stack.worker_url), ScoringClient(stack.url("scorer"))]
    assert metric_sum(stack.url("scorer"), "stream_ctr_scorer_replica_users") == len(USERS)
    arms = set()
    for user in USERS:
        a, b = _agree(clients, user, "same")
        assert a == b, user  # arm, model version, every item's score and position
        assert a["arm"] == Experiment.default().assign(user).arm
        arms.add(a["arm"])
    assert {"ft", "ft_lc"} <= arms  # users whose ranking needs their head: a scorer without it answers otherwise


def test_an_erased_user_is_scored_as_new_by_the_scorer_too(stack):
    clients = [ScoringClient(stack.worker_url), ScoringClient(stack.url("scorer"))]
    user = next(u for u in USERS if Experiment.default().assign(u).arm == "ft")
    before = clients[1].score(score_request(user, "erase-before"))
    req = urllib.request.Request(f"{stack.worker_url}/v1/users/{user}", method="DELETE")
    with urllib.request.urlopen(req) as resp:
        assert orjson.loads(resp.read())["erased"] is True
    a, b = _agree(clients, user, "erased")
    assert a == b and a["items"] != before["items"]  # the tombstone reached the scorer: no head any more


def test_bad_requests_to_a_scorer_are_4xx_with_a_message(stack):
    client = ScoringClient(stack.url("scorer"))
    cases = {
        b'{"user_id": "u1",': 400,
        b'{"user_id": "u1", "request_id": "r", "candidates": []}': 422,
        b"x" * (MAX_BODY_BYTES + 10): 413,
    }
    for body, status in cases.items():
        got, answer = client.post(body)
        assert got == status and orjson.loads(answer)["error"], (body[:60], got, answer[:200])
    assert get_json(f"{stack.url('scorer')}/openapi.json")[1]["paths"]["/v1/score"]["post"]


def test_the_users_worker_attributes_the_events_of_rankings_a_scorer_served(stack):
    worker = stack.worker_url
    names = ("stream_ctr_ab_requests_total", "stream_ctr_ab_impressions_total", "stream_ctr_ab_unattributed_total")
    base = {name: metric_sum(worker, name) for name in names}
    sim = SimConfig(requests=300, candidates=30, k=4, seed=3, start_ts=time.time())
    loop = run_closed_loop(stack.settings, sim, SyntheticConfig(users=80, items=120, seed=5), url=stack.url("scorer"))
    assert loop.report()["overall"]["requests"] == 300
    deadline = time.monotonic() + 120
    while metric_sum(worker, "stream_ctr_ab_impressions_total") < base["stream_ctr_ab_impressions_total"] + 300 * 4:
        assert time.monotonic() < deadline, {name: metric_sum(worker, name) - base[name] for name in names}
        time.sleep(0.5)
    got = {name: metric_sum(worker, name) - base[name] for name in names}
    assert got == {
        "stream_ctr_ab_requests_total": 300,
        "stream_ctr_ab_impressions_total": 1200,
        "stream_ctr_ab_unattributed_total": 0,
    }


def _model_version(url: str) -> int:
    return get_json(f"{url}/healthz")[1]["model_version"]


def _request_staleness(client, url: str, rid: str) -> float:
    """The staleness (events its model had not learned) the scorer counted for one request, from its histogram."""
    before = [metric_sum(url, f"stream_ctr_model_staleness_samples_{s}") for s in ("sum", "count")]
    client.score(score_request(USERS[0], rid))
    after = [metric_sum(url, f"stream_ctr_model_staleness_samples_{s}") for s in ("sum", "count")]
    assert after[1] - before[1] == 1
    return after[0] - before[0]


def test_a_scorers_requests_count_every_written_event_its_model_has_not_learned(stack, make_events):
    """Last in this module: it stops the trainer, so that the model served stays where it is."""
    url, client = stack.url("scorer"), ScoringClient(stack.url("scorer"))
    stack.kill("trainer")
    # An update the trainer published just before may still be on its way: wait until the model stays put.
    deadline, version, previous = time.monotonic() + 30, _model_version(url), None
    while version != previous:
        assert time.monotonic() < deadline, "the scorer's model kept changing after the trainer stopped"
        time.sleep(3)
        previous, version = version, _model_version(url)
    start = _request_staleness(client, url, "stale-0")
    more = make_events(users=40, events_per_user=3, seed=7).events
    replay(more, stack.settings.kafka_bootstrap, topics.events(stack.settings).name)
    deadline, seen = time.monotonic() + 30, start
    while seen < start + len(more):  # the scorer reads the stream's end offsets every 0.1 s
        assert time.monotonic() < deadline, (start, seen)
        time.sleep(0.2)
        seen = _request_staleness(client, url, f"stale-{seen}")
    assert seen == start + len(more)
    assert _model_version(url) == version
    quantiles = get_json(f"{url}/healthz")[1]["staleness"]  # over every request this scorer answered
    assert quantiles["requests"] >= 2 and 0 <= quantiles["p50"] <= quantiles["p90"] <= quantiles["p99"]
