"""Property-based contract tests for *valid* input: whatever the published contracts allow must go through the real
code paths without an exception, every score finite and in [0, 1], and the same input must give the same output.

The inputs are generated from the contracts themselves, not written by hand: :func:`from_schema` turns a JSON
Schema (the published ``topics/schemas/event.schema.json``, the ``ScoreRequest`` schema of the OpenAPI document)
into a Hypothesis strategy, refusing any keyword it does not know, so that a constraint added to a schema is never
silently ignored here. Feature names are biased toward the fields of the feature spec, so that the fields the model
reads get the awkward values (empty, ``"|||"``, numbers, 40 genres, astral-plane text, 200 characters).

Entry points, each with at least :data:`QUOTA` generated inputs (every test asserts its own count):

1. events: ``parse_event`` -> ``HashingEncoder`` -> ``test_then_train`` (every correction method) and the
   trainer's ``learn_many``;
2. ``POST /v1/score`` bodies: ``parse_score_request`` -> ``rank``, for a user with heads and a cold user;
3. user ids (``/v1/users/{id}``): a table key (Faust's ``raw`` codec, the partitioner), a state whose summary
   serialises;
4. ``FeatureSpec`` strings: a spec or a ``ValueError``, and a spec encodes any event;
5. configuration: in ``test_valid_config.py``;
6. the published schemas against the code: every event and request of 1. and 2. is validated against its schema
   as well, and near misses (a few thousand) are refused by the code exactly when the schema refuses them.

Everything is derandomized (the same examples every run) and sized to run in about a minute on two cores: long
strings and big collections repeat a few drawn items (Hypothesis's cost is per drawn choice), and they are rare.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import time
from collections import Counter

import jsonschema
import numpy as np
import orjson
import pytest
import torch
from contract_inputs import DEFAULT, NUMERIC_FEATURES, QUOTA, SPEC_POOL, SPEC_TEXT, fast
from hypothesis import given
from hypothesis import strategies as st
from schema_strategies import CHAR, INT64, JSON, UNBOUNDED, cycle, from_schema, many, mapping

from stream_ctr import topics
from stream_ctr.config import Settings
from stream_ctr.contracts.arms import ARMS
from stream_ctr.contracts.events import DLQ_REASONS, InvalidEvent, parse_event, partition_of
from stream_ctr.contracts.features import FeatureSpec, HashingEncoder
from stream_ctr.data import load_dataset
from stream_ctr.experiments.assignment import Assignment, Experiment
from stream_ctr.learning import loop as learning
from stream_ctr.learning.correction import METHODS
from stream_ctr.learning.heads import HeadParams
from stream_ctr.learning.state import UserState
from stream_ctr.serving.scoring import (
    MAX_BODY_BYTES,
    BadRequest,
    Query,
    ScoreRequest,
    openapi,
    parse_score_request,
    rank,
)
from stream_ctr.trainer.global_trainer import GlobalTrainer

#: Generated inputs each entry point must see in one run: 10,000 in `make test`, a tenth in `make test-fast`.
COUNTS: Counter = Counter()


# --- the contracts and their strategies -----------------------------------------------------------------------------

EVENT_SCHEMA = topics.schema("event")
EVENT_VALIDATOR = jsonschema.Draft202012Validator(EVENT_SCHEMA)
OPENAPI = openapi()
REQUEST_SCHEMA = OPENAPI["components"]["schemas"]["ScoreRequest"]
#: The request schema with the OpenAPI document's components beside it, so that its ``$ref``s resolve.
REQUEST_VALIDATOR = jsonschema.Draft202012Validator({**REQUEST_SCHEMA, "components": OPENAPI["components"]})

DEFAULT_SPEC = FeatureSpec.parse(DEFAULT.features, DEFAULT.hash_buckets)
#: A spec where the same names are read as numbers and one wide multi field: numbers reach the model's weights.
SPEC_NAMES = tuple(f.name for f in DEFAULT_SPEC.fields)
NOW = float(int(time.time()))  # ``ts`` may be up to a day ahead of the clock: prose in the schema, so bounded here
GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

#: Values chosen to hurt the fields the model reads (all valid: strings of at most 1,024 characters or finite
#: numbers).
WEIRD = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "|",
            "|||",
            " | | ",
            "||A||",
            "A||B",
            "0",
            "-0",
            "3.0",
            "1e309",
            "-1e309",
            "nan",
            "NaN",
            "inf",
            "-inf",
            "٣",
            "²",
            "\x00",
            "\u200b",
            "😀|😀",
            "F",
            "M",
            "|".join(GENRES),
            "|".join(GENRES * 3)[:1024],
            "|".join(g for g in GENRES * 3)[:200],
        ]
    ),
    st.sampled_from([0, -0.0, 1, -1, 3.0, 1e308, -1e308, 5e-324, 2.5, INT64[0], INT64[1], 1 << 53, (1 << 53) + 1]),
    st.lists(st.sampled_from(GENRES), min_size=1, max_size=3).map(lambda g: "|".join(cycle(g, 40))),
    st.lists(st.text(CHAR, max_size=8), max_size=8).map(lambda t: "|".join(cycle(t, 40)) if t else ""),
    st.text(CHAR, min_size=1, max_size=6).map(lambda t: cycle(t, 200)),
)


def _features(schema: dict, build, names, few: int = 8, odds: int = 3):
    """A features map whose names are mostly ``names`` (and otherwise anything the schema allows), whose values are
    the schema's or :data:`WEIRD`."""
    name_schema = {"type": "string", **schema.get("propertyNames", {})}
    keys = st.one_of(st.sampled_from(names), build(name_schema, ""))
    values = st.one_of(build(schema["additionalProperties"], "/additionalProperties"), WEIRD)
    return mapping(
        keys,
        values,
        0,
        schema.get("maxProperties", UNBOUNDED),
        name_schema.get("maxLength", UNBOUNDED),
        few=few,
        odds=odds,
    )


def _event_refine(names):
    def refine(path, schema, build):
        if path == "/properties/ts":
            return st.one_of(st.floats(0, NOW), st.integers(0, int(NOW)), st.just(0), st.just(NOW))
        if path == "/properties/features":
            return _features(schema, build, names, few=8, odds=7)
        return None

    return refine


def events_from_schema(names=SPEC_NAMES):
    return from_schema(EVENT_SCHEMA, refine=_event_refine(names))


EVENT = events_from_schema()
_FEATURES_SCHEMA = EVENT_SCHEMA["properties"]["features"]
#: A feature name and a feature value, as the event schema allows them (values also :data:`WEIRD`).
FEATURE_NAME = from_schema({"type": "string", **_FEATURES_SCHEMA.get("propertyNames", {})})
FEATURE_VALUE = st.one_of(from_schema(_FEATURES_SCHEMA["additionalProperties"]), WEIRD)
ID = from_schema(EVENT_SCHEMA["$defs"]["id"], EVENT_SCHEMA)


def _request_refine(path, schema, build):
    """A request's sizes are mostly small, now and then up to the schema's bounds (1,000 candidates of 256 features
    each): every candidate costs a row to score and a subschema to validate."""
    if path.endswith("/properties/features"):
        return _features(schema, build, SPEC_NAMES, few=2, odds=31)
    if path == "/properties/candidates":
        return many(build(schema["items"], "/items"), schema["minItems"], schema["maxItems"], few=3, odds=31)
    if path == "/properties/context":
        names = build({"type": "string", **schema.get("propertyNames", {})}, f"{path}/propertyNames")
        return mapping(
            names,
            build(schema["additionalProperties"], f"{path}/additionalProperties"),
            0,
            schema["maxProperties"],
            UNBOUNDED,
            few=2,
            odds=31,
        )
    return None


REQUEST = from_schema(REQUEST_SCHEMA, OPENAPI, _request_refine)


def _id_text(value) -> str:
    """An id as the event contract reads it: a string as it is, an integer (however written) as its digits."""
    return value if type(value) is str else str(int(value))


def _key(obj: dict) -> bytes:
    return _id_text(obj["user_id"]).encode()


def _parse(obj: dict):
    """``parse_event`` on a schema-valid event; an ``InvalidEvent`` here is a contract mismatch."""
    raw = orjson.dumps(obj)
    try:
        return parse_event(raw, _key(obj))
    except InvalidEvent as exc:
        raise AssertionError(
            f"contract mismatch: parse_event refused a schema-valid event ({exc}): {raw[:300]!r}"
        ) from exc


def _assert_probs(p, what: str):
    p = np.asarray(p, dtype=np.float64)
    assert np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1)), f"{what}: {p[~((p >= 0) & (p <= 1))][:5]}"


# --- the world: a trained model of each spec, trainers to copy, a user with learned heads ----------------------------


@functools.cache
def world() -> dict:
    """For the default spec and :data:`NUMERIC_FEATURES`: a trainer that learned from real data (MovieLens, which
    has the default spec's fields; each property steps copies of it), its snapshot loaded, and user states whose
    heads learned. Built once (a smaller hash space than the default: the buckets' number changes no code path)."""
    data = load_dataset("ml-100k", 1500)
    out = {}
    for name, features in (("default", DEFAULT.features), ("numeric", NUMERIC_FEATURES)):
        trainer = GlobalTrainer(Settings.from_env({}, features=features, hash_buckets=1 << 12))
        assert trainer.learn_many(data[:1000]) == []
        model = trainer.snapshot().build()
        states: dict = {}
        learning.test_then_train([(e, i) for i, e in enumerate(data)], model, states, HeadParams(lr=0.5, steps=3))
        out[name] = {"trainer": trainer, "model": model, "states": states}
    return out


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One torch thread, as the workers run (``STREAM_CTR_WORKER_THREADS``): these batches are tiny, and two threads
    on two busy cores made the module several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- 1. events: parse -> encode -> test-then-train (every correction) -> the trainer's step --------------------------

#: Encoders whose caches fill up over the examples (a cache must change no encoding).
_WARM: dict = {}


def _check_encoding(spec: FeatureSpec, warm: HashingEncoder, rows):
    """Encode ``rows`` with a fresh encoder and with ``warm`` (caches filled by earlier examples): equal, in range."""
    ids, vals = HashingEncoder(spec).encode(rows)
    ids2, vals2 = warm.encode(rows)
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_array_equal(vals, vals2)
    assert ids.shape == vals.shape == (len(rows), spec.n_slots)
    assert ids.min(initial=0) >= 0 and ids.max(initial=0) < spec.buckets
    assert np.all(np.isfinite(vals)) and np.all(vals[ids == 0] == 0)
    return ids, vals


def _ttt(records, model, states, params):
    result = learning.test_then_train(records, model, states, params)
    _, _, preds = result.arrays()
    assert result.applied == len(records) and result.duplicates == 0
    for arm in ARMS:
        _assert_probs(preds[arm], f"{arm} prediction ({params.correction})")
    assert math.isfinite(result.label_shift)
    assert all(math.isfinite(v) for v in (*result.gaps.values(), *result.z.values()))
    return preds


def _learn(events, model, params, passes: int) -> tuple[list, dict]:
    """Test-then-train on ``events`` from fresh states, ``passes`` times (from the second on, heads that learned
    score): the predictions of each pass and the states' bytes. Every head stays finite."""
    states: dict = {}
    preds = [
        _ttt([(e, k * len(events) + i) for i, e in enumerate(events)], model, states, params) for k in range(passes)
    ]
    for state in states.values():
        summary = state.summary()
        assert all(math.isfinite(v) for v in summary["head_norm"].values()), summary
        assert all(v is None or math.isfinite(v) for v in summary.values() if not isinstance(v, dict)), summary
    return preds, {u: s.to_bytes() for u, s in states.items()}


@given(
    objs=st.lists(EVENT, min_size=40, max_size=60),
    variant=st.sampled_from(["default", "numeric"]),
    repeat=st.sampled_from(METHODS),
)
@fast(max_examples=QUOTA // 40)
def _events_flow(objs, variant, repeat):
    COUNTS["events"] += len(objs)
    for obj in objs:  # the strategy's instances are the schema's (6.), or the builder is wrong
        EVENT_VALIDATOR.validate(obj)
        COUNTS["schema:event"] += 1
    events = [_parse(obj) for obj in objs]
    assert events == [_parse(obj) for obj in objs]
    w = world()[variant]
    model = w["model"]
    rows = [(e.user_id, e.item_id, e.features) for e in events]
    _check_encoding(DEFAULT_SPEC, _WARM.setdefault("default", HashingEncoder(DEFAULT_SPEC)), rows)
    _check_encoding(model.encoder.spec, model.encoder, rows)

    # Every correction method as the label-corrected arm's (its heads stay finite, so they score finite
    # probabilities); one of them (drawn) also scores with its learned heads, on two fresh copies that must agree.
    for method in METHODS:
        if method != repeat:
            _learn(events, model, HeadParams(correction=method), passes=1)
    runs = [_learn(events, model, HeadParams(correction=repeat), passes=2) for _ in range(2)]
    assert runs[0][1] == runs[1][1]
    for preds, preds2 in zip(runs[0][0], runs[1][0]):
        for arm in ARMS:
            np.testing.assert_array_equal(preds[arm], preds2[arm])

    # The trainer's step: nothing fails, and two copies of one trainer learn the batch alike.
    outs = []
    for _ in range(2):
        trainer = _copy_trainer(w["trainer"])
        assert trainer.learn_many(events) == []
        probs = trainer.predict_proba(events)
        _assert_probs(probs, "trainer prediction")
        assert math.isfinite(trainer.last_loss)
        outs.append((probs, trainer.model.state_dict()))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    assert all(outs[0][1][k].equal(outs[1][1][k]) for k in outs[0][1])


def _copy_trainer(trainer: GlobalTrainer) -> GlobalTrainer:
    """A deep copy with an empty encoder cache (copying the cache would cost more than the step it serves; the
    cache changes no encoding, which :func:`_check_encoding` asserts)."""
    return copy.deepcopy(trainer, memo={id(trainer.encoder): HashingEncoder(trainer.spec)})


def test_valid_events_flow_through_every_stage():
    _events_flow()
    assert COUNTS["events"] >= QUOTA and COUNTS["schema:event"] >= QUOTA, COUNTS


# --- 2. POST /v1/score: parse_score_request -> rank, for a user with heads and a cold user ---------------------------


def _check_ranking(request: Query, model, state, assignment: Assignment, twice: bool = True):
    """Rank (``twice``: twice, for the same response), every score finite in [0, 1], highest first, every candidate
    once."""
    response = rank(request, model, state, assignment, Experiment.default())
    if twice:
        again = rank(request, model, state, assignment, Experiment.default())
        assert response == again
    scores = [it.score for it in response.items]
    _assert_probs(scores, f"score ({assignment.arm})")
    assert scores == sorted(scores, reverse=True)
    assert sorted(response.item_ids) == sorted(request.item_ids)
    assert (response.arm, response.request_id, response.model_version) == (
        assignment.arm,
        request.request_id,
        model.version,
    )
    return response


def _validate_request(obj: dict) -> None:
    """``REQUEST_VALIDATOR.validate(obj)``, each distinct candidate once: many candidates repeat a few drawn ones
    (:func:`many`), and the schema constrains each candidate alone (no ``uniqueItems``), so validating a
    thousand copies of three would only take a thousand times longer."""
    candidates = obj["candidates"]
    bounds = REQUEST_SCHEMA["properties"]["candidates"]
    assert bounds["minItems"] <= len(candidates) <= bounds["maxItems"] and "uniqueItems" not in bounds
    REQUEST_VALIDATOR.validate({**obj, "candidates": list({id(c): c for c in candidates}.values())})


@given(obj=REQUEST, variant=st.sampled_from(["default", "numeric"]), arm=st.sampled_from(ARMS))
@fast(max_examples=QUOTA)
def _requests_ranked(obj, variant, arm):
    COUNTS["requests"] += 1
    _validate_request(obj)  # the strategy's instances are the published schema's (6.)
    COUNTS["schema:request"] += 1
    body = orjson.dumps(obj)
    try:
        request = parse_score_request(body)
    except BadRequest as exc:
        # The one refusal the schema cannot state: a body over the size limit (documented in the OpenAPI as 413).
        assert exc.status == 413 and len(body) > MAX_BODY_BYTES, f"contract mismatch: {exc} for {body[:300]!r}"
        return
    assert request == parse_score_request(body)
    schema = ScoreRequest.model_validate_json(body)  # the fast check's values are the schema's
    assert request == (
        schema.user_id,
        schema.request_id,
        [c.item_id for c in schema.candidates],
        [c.features for c in schema.candidates],
    )
    w = world()[variant]
    model, states = w["model"], w["states"]
    # A user whose heads learned (every arm, the control's included: it ignores them), and a cold user (no state)
    # in the arm the experiment assigns (the same code; ranked once).
    warm = states[min(states)]
    _check_ranking(request, model, warm, Assignment(arm, True, 0))
    _check_ranking(request, model, None, Experiment.default().assign(request.user_id), twice=False)


def test_valid_score_requests_are_ranked():
    _requests_ranked()
    assert COUNTS["requests"] >= QUOTA and COUNTS["schema:request"] >= QUOTA, COUNTS


# --- 3. /v1/users/{id}: any valid id is a table key, and its state's summary serialises ------------------------------


@given(ids=st.lists(ID, min_size=25, max_size=40))
@fast(max_examples=QUOTA // 25)
def _ids_are_keys(ids):
    from faust.serializers import codecs
    from faust.utils import json as faust_json

    COUNTS["user ids"] += len(ids)
    objs = [
        {"event_id": f"e{i}", "user_id": uid, "item_id": "i", "ts": NOW, "label": i % 2} for i, uid in enumerate(ids)
    ]
    events = [_parse(obj) for obj in objs]
    w = world()["default"]
    states: dict = {}  # stands for the users table (any MutableMapping; the worker's tests use a dict too)
    learning.test_then_train([(e, i) for i, e in enumerate(events)], w["model"], states, HeadParams())
    experiment = Experiment.default()
    for event in events:
        uid = event.user_id
        # The table's key and its changelog's: Faust's raw codec, utf-8, the same bytes as the events' key, so the
        # changelog record lands on the user's events partition.
        key = codecs.dumps("raw", uid)
        assert key == uid.encode("utf-8") and codecs.loads("raw", key).decode("utf-8") == uid
        assert 0 <= partition_of(key, DEFAULT.events_partitions) < DEFAULT.events_partitions
        assert experiment.assign(uid) == experiment.assign(uid)
        state = states[uid]
        summary = state.summary()
        assert UserState.from_bytes(state.to_bytes()).summary() == summary
        # The view's body (faust's web.json serialises with orjson), read back unchanged.
        view = {"user_id": uid, **summary}
        assert orjson.loads(faust_json.dumps(view)) == orjson.loads(orjson.dumps(view)) == view


def test_valid_user_ids_are_table_keys_with_a_serialisable_summary():
    _ids_are_keys()
    assert COUNTS["user ids"] >= QUOTA, COUNTS


# --- 4. FeatureSpec strings: a spec or a ValueError; a spec encodes any event ----------------------------------------


@given(
    texts=st.lists(SPEC_TEXT, min_size=5, max_size=5),
    buckets=st.one_of(st.just(DEFAULT.hash_buckets), st.integers(-1, 1 << 40)),
    user_id=st.booleans(),
    features=st.lists(
        st.dictionaries(st.one_of(st.sampled_from(SPEC_POOL), FEATURE_NAME), FEATURE_VALUE, max_size=8),
        min_size=1,
        max_size=3,
    ),
)
@fast(max_examples=QUOTA // 5)
def _specs(texts, buckets, user_id, features):
    events = [
        _parse({"event_id": "e", "user_id": "u", "item_id": "i", "ts": 0, "label": 0, "features": f}) for f in features
    ]
    rows = [(e.user_id, e.item_id, e.features) for e in events]
    for text in texts:
        COUNTS["feature specs"] += 1
        try:
            spec = FeatureSpec.parse(text, buckets, user_id)
        except ValueError:
            continue
        assert spec == FeatureSpec.parse(text, buckets, user_id) == FeatureSpec.from_dict(spec.to_dict())
        warm = HashingEncoder(spec)
        _check_encoding(spec, warm, rows)
        _check_encoding(spec, warm, rows)  # the second time from the warm encoder's caches


def test_feature_spec_strings_parse_or_raise_value_error_and_specs_encode_any_event():
    _specs()
    assert COUNTS["feature specs"] >= QUOTA, COUNTS


# --- 6. the published schemas against the code ------------------------------------------------------------------------
# Every generated event above was also checked against the event schema, and every request against the OpenAPI
# document's ScoreRequest schema (``schema:event``, ``schema:request``). Here: near misses. Whatever the code refuses
# (a dead letter, a 4xx), the schema refuses too, so that a producer validating against the schema is never surprised,
# and the other way round: the schema and the code draw one line.

#: Values just past the published bounds (or of the wrong kind) of any field. Near misses are written by :func:`_json`,
#: which (unlike orjson) writes any integer and 2e308: both are JSON, neither is a double.
EDGE = st.one_of(
    JSON,
    st.sampled_from(
        [
            "",
            "x" * 257,
            "x" * 1025,
            7.5,
            -1,
            -0.5,
            2,
            0.5,
            1e19,
            -1e19,
            1 << 63,
            -(1 << 63),
            (1 << 63) - 1,
            (1 << 64) - 1,
            1 << 64,
            10**20,
            10**400,
            -(10**400),
            1.7976931348623157e308,
            math.inf,
            -math.inf,
            {"a": 10**400},
            {"a": math.inf},
            True,
            False,
            None,
            [],
            {},
            "1",
            1e15,
            {"a": None},
            {"a": True},
            {"a": [1]},
            {"a": "x" * 1025},
            {"x" * 1025: 1},
            {f"f{i}": 1 for i in range(257)},
            {f"f{i}": 1 for i in range(256)},
        ]
    ),
)


def _json(obj) -> bytes:
    """``obj`` as JSON text, where an infinite float is written ``2e308`` (which a JSON reader makes infinite again:
    valid JSON that no double holds)."""

    def text(v) -> str:
        if isinstance(v, dict):
            return "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{text(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ",".join(map(text, v)) + "]"
        if isinstance(v, float) and math.isinf(v):
            return "2e308" if v > 0 else "-2e308"
        return json.dumps(v, ensure_ascii=False)

    return text(obj).encode()


def _near_miss(base: dict, where: str, key: str, value):
    """``base`` with one change: ``key`` set to ``value`` (at the top or in ``features``) or, for ``value`` ``...``,
    removed."""
    obj = {**base, "features": dict(base.get("features", {}))} if where == "features" else dict(base)
    target = obj["features"] if where == "features" else obj
    if value is ...:
        target.pop(key, None)
    else:
        target[key] = value
    return obj


_EVENT_FIELDS = st.sampled_from(sorted(EVENT_SCHEMA["properties"]) + ["colour"])


@given(
    cases=st.lists(
        st.tuples(
            EVENT,
            st.one_of(st.tuples(st.just("top"), _EVENT_FIELDS), st.tuples(st.just("features"), FEATURE_NAME)),
            st.one_of(EDGE, st.just(...)),
        ),
        min_size=5,
        max_size=5,
    )
)
@fast(max_examples=300)
def _event_near_misses(cases):
    for base, (where, key), value in cases:
        COUNTS["near misses"] += 1
        obj = _near_miss(base, where, key, value)
        schema_ok = EVENT_VALIDATOR.is_valid(obj)
        try:
            parse_event(_json(obj))  # no record key: the schema cannot see one
        except InvalidEvent as exc:
            assert exc.reason in DLQ_REASONS
            # The one refusal the schema cannot state: a ts too far ahead of the clock (prose in the schema).
            future = exc.reason == "bad_ts" and schema_ok and obj["ts"] > NOW
            assert not schema_ok or future, f"the schema accepts what parse_event refuses ({exc}): {obj}"
            continue
        assert schema_ok, f"parse_event accepts what the event schema refuses: {obj}"


def test_what_parse_event_refuses_the_event_schema_refuses():
    _event_near_misses()
    assert COUNTS["near misses"] >= 1500, COUNTS


_REQUEST_FIELDS = st.sampled_from(sorted(REQUEST_SCHEMA["properties"]) + ["colour"])
_CANDIDATE_FIELDS = st.sampled_from(["item_id", "features", "colour"])


def _request_near_miss(base: dict, where: str, key: str, value):
    """:func:`_near_miss` of the request, or of its first candidate (``candidate``: the candidate's own fields,
    ``features``: its features)."""
    if where == "top":
        return _near_miss(base, "top", key, value)
    first = _near_miss(base["candidates"][0], "top" if where == "candidate" else "features", key, value)
    return {**base, "candidates": [first, *base["candidates"][1:]]}


@given(
    cases=st.lists(
        st.tuples(
            REQUEST,
            st.one_of(
                st.tuples(st.just("top"), _REQUEST_FIELDS),
                st.tuples(st.just("candidate"), _CANDIDATE_FIELDS),
                st.tuples(st.just("features"), FEATURE_NAME),
            ),
            st.one_of(EDGE, st.just(...)),
        ),
        min_size=4,
        max_size=4,
    )
)
@fast(max_examples=300)
def _request_near_misses(cases):
    for base, (where, key), value in cases:
        COUNTS["request near misses"] += 1
        obj = _request_near_miss(base, where, key, value)
        body = _json(obj)
        schema_ok = REQUEST_VALIDATOR.is_valid(obj)
        try:
            parse_score_request(body)
        except BadRequest as exc:
            assert not schema_ok or exc.status == 413, f"the schema accepts what the API refuses ({exc}): {obj}"
            continue
        assert schema_ok, f"the API accepts what its published schema refuses: {obj}"


def test_what_the_score_api_refuses_its_published_schema_refuses():
    _request_near_misses()
    assert COUNTS["request near misses"] >= 1200, COUNTS
