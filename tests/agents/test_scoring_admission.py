"""In-process tier: the worker's scoring view under load, driven through its real handler (no broker, no HTTP
server, no group: every user is this worker's own; routing is the broker tier's): admission (429 with
Retry-After past ``serving_max_in_flight`` or while the event loop stays late), the per-request deadline (503,
never computed), micro-batching (requests held together ranked together, each as it would be alone) and the
serving metrics. The exposures topic is a recorder; everything else is the worker the CLI runs."""

import asyncio

import jsonschema
import orjson
import pytest

from stream_ctr import topics
from stream_ctr.agents.personalize import PersonalizeWorker
from stream_ctr.config import Settings
from stream_ctr.serving.scoring import DEADLINE_HEADER, head_for, parse_score_request, rank


class _Exposures:
    def __init__(self):
        self.sent: list[dict] = []

    def send_soon(self, key: bytes, value: bytes, headers=None) -> None:
        self.sent.append(orjson.loads(value))


class _Web:
    """The two response builders of Faust's web driver the view uses, as (status, body, headers)."""

    def json(self, value, status=200, headers=None):
        return status, value, headers or {}

    def bytes(self, value, content_type=None, status=200):
        return status, orjson.loads(value), {}


class _Request:
    def __init__(self, body: bytes, headers: dict | None = None):
        self.body, self.headers, self.content_length = body, headers or {}, len(body)

    async def read(self) -> bytes:
        return self.body


@pytest.fixture
def worker(make_snapshot):
    settings = Settings.from_env(
        {},
        kafka_bootstrap="127.0.0.1:9",
        features="category,segment",
        hash_buckets=2048,
        serving_max_in_flight=3,
        serving_max_batch=2,
    )
    worker = PersonalizeWorker.build(settings, follow=False, users={})
    worker.app.finalize()
    worker.follower.offer(make_snapshot(settings))
    worker.exposures = worker.scoring.ranker.exposures = _Exposures()
    worker.scoring.routing.owner = lambda user_id: None  # no group here: every user is this worker's (broker tier)
    return worker


def _body(user: str, rid: str, n: int = 20) -> bytes:
    return orjson.dumps(
        {
            "user_id": user,
            "request_id": rid,
            "candidates": [
                {"item_id": f"i{k}", "features": {"category": f"c{k % 5}", "segment": "s1"}} for k in range(n)
            ],
        }
    )


def _serve(worker, requests):
    async def run():
        return await asyncio.gather(*(worker.scoring.handle(_Web(), r) for r in requests))

    return asyncio.run(run())


def _metric(worker, name: str, labels: dict | None = None) -> float:
    return worker.metrics.registry.get_sample_value(name, labels or {})


def test_past_the_in_flight_limit_requests_are_refused_at_once_with_retry_after(worker):
    answers = _serve(worker, [_Request(_body(f"u{k}", f"r{k}")) for k in range(10)])
    statuses = [a[0] for a in answers]
    assert statuses == [200] * 3 + [429] * 7  # three held (the limit), the rest refused before being read
    for _, body, headers in answers[3:]:
        assert headers["Retry-After"] == "1" and "over capacity" in body["error"]
    assert _metric(worker, "stream_ctr_serving_shed_total", {"reason": "over_capacity"}) == 7
    assert len(worker.exposures.sent) == 3 and worker.scoring.in_flight == 0
    assert _metric(worker, "stream_ctr_serving_in_flight") == 0
    # serving_max_batch=2: the three held requests took two forward passes
    assert _metric(worker, "stream_ctr_serving_batch_requests_count") == 2
    assert _metric(worker, "stream_ctr_serving_batch_requests_sum") == 3


def test_a_request_past_its_deadline_is_dropped_not_computed(worker):
    ((status, body, headers),) = _serve(worker, [_Request(_body("u1", "late"), {DEADLINE_HEADER: "0.001"})])
    assert status == 503 and "deadline" in body["error"] and headers["Retry-After"] == "1"
    assert worker.exposures.sent == [] and len(worker.pending) == 0
    assert _metric(worker, "stream_ctr_serving_shed_total", {"reason": "deadline"}) == 1


@pytest.mark.parametrize("header", ["soon", "0", "-5", "nan", "1e12"])
def test_a_deadline_that_is_not_milliseconds_is_a_400(worker, header):
    ((status, body, _),) = _serve(worker, [_Request(_body("u1", "r"), {DEADLINE_HEADER: header})])
    assert status == 400 and DEADLINE_HEADER in body["error"]


def test_requests_batched_together_are_ranked_as_each_would_be_alone(worker, make_events):
    events = make_events(users=6, events_per_user=30, seed=3).events
    from stream_ctr.learning import loop as learning
    from stream_ctr.learning.heads import HeadParams

    learning.test_then_train(
        [(e, i) for i, e in enumerate(events)], worker.follower.holder.current, worker.users, HeadParams()
    )
    bodies = [_body(u, f"b{k}", n=7 + k) for k, u in enumerate(["u0", "u1", "nobody"])]
    answers = _serve(worker, [_Request(b) for b in bodies])
    model = worker.follower.holder.current
    for (status, got, _), body in zip(answers, bodies):
        q = parse_score_request(body)
        a = worker.experiment.assign(q.user_id)
        alone = rank(q, model, worker.users.get(q.user_id), a, worker.experiment)
        assert status == 200 and [it["item_id"] for it in got["items"]] == alone.item_ids
        assert [it["score"] for it in got["items"]] == pytest.approx(alone.scores, rel=1e-6)
        assert got["arm"] == a.arm
    assert (
        sum(head_for(worker.users.get(u), worker.experiment.assign(u), model) is not None for u in ("u0", "u1")) >= 1
    )  # at least one request was personalised by a head
    for exposure in worker.exposures.sent:
        jsonschema.validate(exposure, topics.schema("exposure"))
    assert {e["request_id"] for e in worker.exposures.sent} == {"b0", "b1", "b2"}


def test_while_the_event_loop_stays_late_new_requests_are_refused(worker):
    """The probe measures how late the loop runs. One late probe (a learning batch held the loop once) refuses
    nothing; two in a row past serving_max_lag_ms (20 ms) and the door answers 429 while requests are held, until
    the loop catches up. With none held the lateness is learning's: the request is served, not refused."""
    import time

    async def blocked(ms: float) -> None:
        time.sleep(ms / 1000)  # the loop is held: the probe due meanwhile runs late
        await asyncio.sleep(0.0005)  # the late probe (due before) runs first

    async def run():
        view = worker.scoring
        answers = [await view.handle(_Web(), _Request(_body("u1", "a")))]  # starts the probe
        await asyncio.sleep(0.006)
        await blocked(50)
        lags = [view.lag]
        answers.append(await view.handle(_Web(), _Request(_body("u1", "b"))))  # once late: served
        await blocked(50)
        lags.append(view.lag)
        answers.append(await view.handle(_Web(), _Request(_body("u1", "c"))))  # late twice, none held: served
        await blocked(50)
        await blocked(50)
        lags.append(view.lag)
        view.in_flight += 1  # a request held (its body being read)
        answers.append(await view.handle(_Web(), _Request(_body("u1", "d"))))  # late twice, one held: refused
        view.in_flight -= 1
        await asyncio.sleep(0.02)  # a few on-time probes
        answers.append(await view.handle(_Web(), _Request(_body("u1", "e"))))
        return answers, lags

    answers, lags = asyncio.run(run())
    assert min(lags) > 0.02
    assert [a[0] for a in answers] == [200, 200, 200, 429, 200]
    assert "behind" in answers[3][1]["error"] and answers[3][2]["Retry-After"] == "1"
    assert _metric(worker, "stream_ctr_serving_loop_lag_seconds") < 0.02
