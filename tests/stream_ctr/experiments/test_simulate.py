"""The closed loop (stream_ctr.experiments.simulate) with in-process fake scorers: ranking by the TRUE probability
serves the oracle ceiling, a random ranking sits on the random floor, events are those of the shown items, runs are
deterministic, a response that breaks the contract is refused, and the tallies add up."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest

from stream_ctr.data.synthetic import SyntheticConfig, SyntheticWorld
from stream_ctr.experiments.simulate import ClosedLoop, InvalidResponse, SimConfig, render_markdown

WORLD = SyntheticWorld.from_config(SyntheticConfig(users=40, items=120, drift=2.0, seed=4))


def _index(entity_id: str) -> int:
    return int(entity_id[1:])


def _respond(request: dict, arm: str, ranked_ids: list[str]) -> dict:
    items = [{"item_id": i, "score": float(len(ranked_ids) - r)} for r, i in enumerate(ranked_ids)]
    return {"request_id": request["request_id"], "arm": arm, "model_version": "test", "items": items}


def true_prob_scorer(world: SyntheticWorld, arm: str = "truth"):
    def score(request: dict) -> dict:
        ids = [c["item_id"] for c in request["candidates"]]
        p = world.prob(_index(request["user_id"]), [_index(i) for i in ids])
        return _respond(request, arm, [ids[j] for j in np.argsort(-p, kind="stable")])

    return score


def random_scorer(seed: int, arm: str = "random"):
    rng = np.random.default_rng(seed)

    def score(request: dict) -> dict:
        ids = [c["item_id"] for c in request["candidates"]]
        return _respond(request, arm, [ids[j] for j in rng.permutation(len(ids))])

    return score


def _run(cfg: SimConfig, score, world: SyntheticWorld = WORLD) -> tuple[ClosedLoop, list]:
    loop, events = ClosedLoop(world, cfg), []
    loop.run(score, events.append)
    return loop, events


def test_true_prob_ranking_serves_the_oracle_ceiling():
    loop, _ = _run(SimConfig(requests=300, candidates=30, k=5, seed=1), true_prob_scorer(WORLD))
    r = loop.report()["arms"]["truth"]
    assert r["expected_ctr"] == pytest.approx(r["oracle_ctr"], rel=1e-12)
    assert r["oracle_ctr"] > r["random_ctr"] + 0.1


def test_random_ranking_sits_on_the_random_floor():
    """Per request, the mean true probability of k of C candidates drawn without replacement has the candidates'
    mean as expectation and variance s^2 (C - k) / (k (C - 1)), with s^2 <= 1/4 for values in [0, 1]. Over R
    independent requests the served-minus-floor gap has sd <= 0.5 sqrt((C - k) / (k (C - 1) R)); allow 4 sd."""
    cfg = SimConfig(requests=2000, candidates=50, k=5, seed=2)
    loop, _ = _run(cfg, random_scorer(7))
    r = loop.report()["arms"]["random"]
    tol = 4 * 0.5 * math.sqrt((cfg.candidates - cfg.k) / (cfg.k * (cfg.candidates - 1) * cfg.requests))
    assert abs(r["expected_ctr"] - r["random_ctr"]) <= tol
    assert r["oracle_ctr"] - r["random_ctr"] > 5 * tol  # the bound is tight enough to tell the two apart


def test_oracle_is_above_random_on_a_drifted_world_and_bounds_any_ranking():
    world = SyntheticWorld.from_config(SyntheticConfig(users=60, items=200, drift=2.0, seed=9))
    loop, _ = _run(SimConfig(requests=400, seed=3), random_scorer(1), world)
    r = loop.report()["overall"]
    assert r["oracle_ctr"] > r["random_ctr"] + 0.1
    for by_arm in loop.per_user.values():
        for t in by_arm.values():
            assert t.random - 1e-9 <= t.oracle and t.expected <= t.oracle + 1e-9


def test_events_are_the_shown_items_with_their_request_id():
    cfg = SimConfig(requests=50, candidates=20, k=4, seed=5, start_ts=1_700_000_000.0)
    responses = {}
    inner = random_scorer(3)

    def recording(request: dict) -> dict:
        responses[request["request_id"]] = (request, inner(request))
        return responses[request["request_id"]][1]

    _, events = _run(cfg, recording)
    assert len(events) == cfg.requests * cfg.k == len({e.event_id for e in events})
    assert len(responses) == cfg.requests and all(rid.startswith("sim-5-") for rid in responses)
    by_request = defaultdict(list)
    for e in events:
        by_request[e.request_id].append(e)
    for rid, (request, response) in responses.items():
        shown = by_request[rid]
        assert [e.item_id for e in shown] == [i["item_id"] for i in response["items"][: cfg.k]]
        assert {e.user_id for e in shown} == {request["user_id"]}
        candidates = {c["item_id"]: c["features"] for c in request["candidates"]}
        assert len(candidates) == cfg.candidates and request["context"] == {"surface": "sim"}
        for e in shown:
            assert e.features == candidates[e.item_id] == WORLD.features(_index(e.user_id), _index(e.item_id))
            assert e.label in (0, 1)
    ts = [e.ts for e in events]
    assert ts[0] >= cfg.start_ts and all(a < b for a, b in zip(ts, ts[1:]))


def test_same_seed_same_run_and_another_seed_another():
    def run(seed: int):
        loop, events = _run(SimConfig(requests=80, candidates=10, k=3, seed=seed), random_scorer(0))
        return [e.to_dict() for e in events], loop.report()

    assert run(11) == run(11)
    assert run(11)[0] != run(12)[0]


def _break(mutate):
    def score(request: dict) -> dict:
        response = true_prob_scorer(WORLD)(request)
        mutate(response)
        return response

    return score


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.update(request_id="other"), "must echo request_id 'sim-0-0', got 'other'"),
        (lambda r: r["items"][1].update(item_id="i999999"), "item 'i999999' is not a distinct candidate"),
        (lambda r: r["items"].__setitem__(2, dict(r["items"][0])), "is not a distinct candidate"),
        (lambda r: r.update(items=r["items"][:2]), "at least k=5"),
        (lambda r: r.pop("arm"), "arm must be a non-empty string"),
        (lambda r: r["items"].reverse(), "highest first"),
    ],
)
def test_a_response_breaking_the_contract_is_refused(mutate, message):
    loop = ClosedLoop(WORLD, SimConfig(requests=1, candidates=20))
    with pytest.raises(InvalidResponse, match=message):
        loop.step(_break(mutate))
    assert loop.arms == {} and loop.per_user == {}
    assert loop.step(true_prob_scorer(WORLD))[0].request_id == "sim-0-1"  # a refused request's id is not reused


def test_per_user_tallies_add_up_to_the_events_and_the_arms():
    truth, rand = true_prob_scorer(WORLD), random_scorer(4)

    def by_parity(request: dict) -> dict:
        return (truth if _index(request["user_id"]) % 2 else rand)(request)

    progress = []
    loop = ClosedLoop(WORLD, SimConfig(requests=500, candidates=15, k=3, seed=6))
    events = []
    loop.run(by_parity, events.append, progress.append)
    assert progress == list(range(1, 501))
    counted = defaultdict(lambda: [0, 0])
    for e in events:
        counted[e.user_id][0] += e.label
        counted[e.user_id][1] += 1
    assert len(loop.per_user) <= len(WORLD.user_ids)
    for user_id, by_arm in loop.per_user.items():
        assert list(by_arm) == ["truth" if _index(user_id) % 2 else "random"]
        (t,) = by_arm.values()
        assert [t.clicks, t.impressions] == counted[user_id] and t.impressions == 3 * t.requests
    report = loop.report()
    for arm, r in report["arms"].items():
        users = [by_arm[arm] for by_arm in loop.per_user.values() if arm in by_arm]
        assert r["users"] == len(users)
        assert r["clicks"] == sum(t.clicks for t in users) and r["impressions"] == sum(t.impressions for t in users)
        assert r["expected_ctr"] == pytest.approx(sum(t.expected for t in users) / r["impressions"])
    overall = report["overall"]
    assert overall["requests"] == 500 and overall["impressions"] == len(events) == 1500
    assert overall["clicks"] == sum(e.label for e in events) and overall["users"] == len(loop.per_user)
    assert report["arms"]["truth"]["expected_ctr"] > report["arms"]["random"]["expected_ctr"]


def test_report_before_any_request_and_markdown():
    loop = ClosedLoop(WORLD, SimConfig(requests=1))
    empty = loop.report()
    assert empty["arms"] == {}
    assert empty["overall"] == dict(
        requests=0, users=0, impressions=0, clicks=0, ctr=None, expected_ctr=None, oracle_ctr=None, random_ctr=None
    )
    assert "| **all** | 0 | 0 | 0 | 0 | — | — | — | — |" in render_markdown(empty)
    loop.run(true_prob_scorer(WORLD), lambda e: None)
    table = render_markdown(loop.report()).splitlines()
    assert "random floor" in table[0] and "oracle ceiling" in table[0]
    assert [row.split(" | ")[0] for row in table[2:]] == ["| truth", "| **all**"]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(requests=0), "requests"),
        (dict(requests=5, candidates=0), "candidates"),
        (dict(requests=5, k=0), "k"),
        (dict(requests=5, candidates=3, k=4), "k must be <= candidates"),
        (dict(requests=2.5), "requests"),
        (dict(requests=5, start_ts=-1.0), "start_ts"),
        (dict(requests=5, seconds_per_event=0.0), "seconds_per_event"),
    ],
)
def test_sim_config_names_the_bad_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SimConfig(**kwargs)


def test_more_candidates_than_items_is_refused():
    with pytest.raises(ValueError, match="candidates \\(200\\) exceeds the world's 120 items"):
        ClosedLoop(WORLD, SimConfig(requests=1, candidates=200))
