"""The scoring contract: every bad request is a 4xx with a message (never an exception), ranking by arm."""

import json
import math

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_ctr.experiments.assignment import Assignment, Experiment
from stream_ctr.learning import loop as learning
from stream_ctr.learning.heads import HeadParams, sigmoid
from stream_ctr.serving.scoring import (
    MAX_BODY_BYTES,
    MAX_CANDIDATES,
    BadRequest,
    Query,
    ScoreRequest,
    ScoreResponse,
    exposure_record,
    head_for,
    openapi,
    parse_score_request,
    rank,
    rank_many,
)


def _body(**changes) -> bytes:
    req = {
        "user_id": "u1",
        "request_id": "r1",
        "candidates": [{"item_id": "i1", "features": {"category": "c1"}}],
        "context": {"surface": "home"},
    }
    req.update(changes)
    return orjson.dumps({k: v for k, v in req.items() if v is not ...})


BAD = [
    ("missing user_id", _body(user_id=...), 422, "user_id"),
    ("empty user_id", _body(user_id=""), 422, "user_id"),
    ("integer user_id", _body(user_id=7), 422, "user_id"),
    ("no candidates", _body(candidates=[]), 422, "candidates"),
    (
        "too many candidates",
        _body(candidates=[{"item_id": f"i{i}"} for i in range(MAX_CANDIDATES + 1)]),
        422,
        "candidates",
    ),
    ("candidate without item_id", _body(candidates=[{"features": {}}]), 422, "item_id"),
    ("feature of wrong type", _body(candidates=[{"item_id": "i", "features": {"x": [1]}}]), 422, "features"),
    ("boolean feature", _body(candidates=[{"item_id": "i", "features": {"x": True}}]), 422, "features"),
    ("unknown field", _body(colour="red"), 422, "colour"),
    (
        "NaN literal",
        b'{"user_id": "u", "request_id": "r", "candidates": [{"item_id": "i", "features": {"x": NaN}}]}',
        422,
        "features",
    ),
    (
        "infinite number",
        b'{"user_id": "u", "request_id": "r", "candidates": [{"item_id": "i", "features": {"x": 1e999}}]}',
        422,
        "features",
    ),
    ("malformed JSON", b'{"user_id": "u",', 400, "malformed JSON"),
    ("not an object", b"[1, 2]", 422, "body"),
    ("empty body", b"", 400, "malformed JSON"),
    ("invalid UTF-8", b'{"user_id": "\xff\xfe"}', 400, "UTF-8"),
    ("body over 1 MB", _body(context={"pad": "x" * MAX_BODY_BYTES}), 413, "limit"),
]


@pytest.mark.parametrize("name,body,status,needle", BAD, ids=[b[0] for b in BAD])
def test_every_bad_request_is_a_4xx_with_a_message(name, body, status, needle):
    with pytest.raises(BadRequest) as err:
        parse_score_request(body)
    assert err.value.status == status and needle in err.value.message, err.value.message


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
            max_leaves=20,
        ).map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {
                "user_id": st.one_of(st.text(max_size=5), st.integers()),
                "request_id": st.text(max_size=5),
                "candidates": st.lists(
                    st.fixed_dictionaries(
                        {"item_id": st.one_of(st.text(max_size=4), st.none())},
                        optional={
                            "features": st.dictionaries(
                                st.text(max_size=4),
                                st.one_of(st.floats(), st.text(max_size=3), st.booleans()),
                                max_size=3,
                            )
                        },
                    ),
                    max_size=3,
                ),
            }
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_any_body_is_either_a_valid_request_or_a_4xx(body):
    """Whatever the body, the fast check and pydantic agree: accepted with the same values, or the schema's 4xx."""
    try:
        req = parse_score_request(body)
    except BadRequest as err:
        assert 400 <= err.status < 500 and err.message
        with pytest.raises(ValueError):  # pydantic's ValidationError
            ScoreRequest.model_validate_json(body)
        return
    schema = ScoreRequest.model_validate_json(body)
    assert isinstance(req, Query) and req.user_id and 1 <= len(req.item_ids) == len(req.features) <= MAX_CANDIDATES
    assert (req.user_id, req.request_id, req.item_ids) == (
        schema.user_id,
        schema.request_id,
        [c.item_id for c in schema.candidates],
    )
    assert req.features == [c.features for c in schema.candidates]
    for f in req.features:
        assert all(isinstance(v, str) or math.isfinite(v) for v in f.values())


@pytest.fixture(scope="module")
def trained(make_events, make_snapshot):
    """A model and user states after test-then-train on synthetic clicks (both heads learned)."""
    events = make_events(users=20, events_per_user=60, seed=8).events
    model = make_snapshot(train_on=events[:600]).build()
    states: dict = {}
    learning.test_then_train([(e, i) for i, e in enumerate(events)], model, states, HeadParams(lr=0.5, steps=3))
    return model, states


def _request(user: str, n: int = 30) -> Query:
    return parse_score_request(
        orjson.dumps(
            {
                "user_id": user,
                "request_id": "r",
                "candidates": [
                    {"item_id": f"i{k}", "features": {"category": f"c{k % 12}", "segment": "s1"}} for k in range(n)
                ],
            }
        )
    )


@pytest.mark.parametrize("arm", ["global", "ft", "ft_lc"])
def test_each_arm_is_served_by_its_own_treatment_only(trained, arm):
    model, states = trained
    req = _request("u3")
    resp = rank(req, model, states["u3"], Assignment(arm, True, 0), Experiment.default())
    g, h = model.forward_rows([(req.user_id, i, f) for i, f in zip(req.item_ids, req.features)])
    expected = sigmoid(g) if arm == "global" else states["u3"].heads[arm].predict_proba_many(g, h)
    got = {it.item_id: it.score for it in resp.items}
    np.testing.assert_allclose([got[i] for i in req.item_ids], expected, rtol=1e-6)
    assert [it.score for it in resp.items] == sorted(got.values(), reverse=True)
    assert (resp.arm, resp.model_version, resp.request_id) == (arm, model.version, "r")


def test_heads_differ_so_the_arms_really_rank_differently(trained):
    model, states = trained
    req = _request("u5")
    scores = {
        arm: [it.score for it in rank(req, model, states["u5"], Assignment(arm, True, 0), Experiment.default()).items]
        for arm in ("global", "ft", "ft_lc")
    }
    assert not np.allclose(scores["ft"], scores["ft_lc"]) and not np.allclose(scores["ft"], scores["global"])


def test_unknown_user_is_scored_by_the_global_model(trained):
    model, _ = trained
    req = _request("never-seen")
    resp = rank(req, model, None, Assignment("ft_lc", True, 0), Experiment.default())
    g, _ = model.forward_rows([(req.user_id, i, f) for i, f in zip(req.item_ids, req.features)])
    assert sorted(it.score for it in resp.items) == pytest.approx(sorted(sigmoid(g).tolist()), rel=1e-6)
    assert resp.arm == "ft_lc" and len(resp.items) == 30


def test_exposure_record_follows_the_published_schema(trained):
    import jsonschema

    from stream_ctr import topics

    model, states = trained
    req = _request("u1", 5)
    experiment = Experiment.default()
    ranking = rank(req, model, states["u1"], Assignment("ft", True, 0), experiment)
    record = orjson.loads(orjson.dumps(exposure_record(req, ranking, experiment.propensity("ft"))))
    jsonschema.validate(record, topics.schema("exposure"))
    assert record["propensity"] == pytest.approx(1 / 3, abs=1e-4)  # three arms, equal weights, every user
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**record, "propensity": 0}, topics.schema("exposure"))
    assert [it["position"] for it in record["items"]] == [0, 1, 2, 3, 4]
    assert record["user_id"] == "u1" and record["experiment"] == "label-correction" and record["epoch"] == 0
    jsonschema.validate(exposure_record(req, ranking, 0.5, epoch=3), topics.schema("exposure"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**record, "epoch": -1}, topics.schema("exposure"))


def test_openapi_describes_the_endpoint():
    doc = openapi()
    post = doc["paths"]["/v1/score"]["post"]
    assert {"200", "400", "413", "422"} <= set(post["responses"])
    assert doc["components"]["schemas"]["ScoreRequest"]["properties"]["candidates"]["maxItems"] == MAX_CANDIDATES


def test_a_batch_ranks_each_request_as_it_would_alone(trained):
    """Micro-batching is invisible: requests of different users, arms and sizes ranked in one forward pass get the
    ranking (order and scores) each gets alone, and each body is a valid ScoreResponse."""
    model, states = trained
    exp = Experiment.default()
    cases = [("u3", "ft", 30), ("u5", "ft_lc", 7), ("never-seen", "ft", 12), ("u1", "global", 1), ("u5", "ft", 30)]
    queries = [_request(user, n)._replace(request_id=f"r{k}") for k, (user, _, n) in enumerate(cases)]
    assignments = [Assignment(arm, True, 0) for _, arm, _ in cases]
    heads = [head_for(states.get(user), a, model) for (user, _, _), a in zip(cases, assignments)]
    assert sum(h is not None for h in heads) == 3  # two arms' heads and the cold user's and control's None
    together = rank_many(queries, model, heads, assignments, exp)
    for q, (user, _, _), a, got in zip(queries, cases, assignments, together):
        alone = rank(q, model, states.get(user), a, exp)
        assert got.item_ids == alone.item_ids
        np.testing.assert_allclose(got.scores, alone.scores, rtol=1e-6)
        body = ScoreResponse.model_validate_json(got.to_json())
        assert (body.request_id, body.arm, [it.item_id for it in body.items]) == (q.request_id, a.arm, got.item_ids)
