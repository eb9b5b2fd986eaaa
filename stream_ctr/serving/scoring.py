"""Serving: the ``POST /v1/score`` contract, its validation, the ranking itself and the exposure record it logs.

Kafka-free and HTTP-free, so the worker's view (``agents/views.py``) is a thin shell and every rule here is tested
directly. A request names a user and up to :data:`MAX_CANDIDATES` candidate items with their features; the
response ranks them by the user's arm: the global snapshot alone for ``global`` (and for users outside the
experiment's coverage), the snapshot plus the user's head of that arm for ``ft`` / ``ft_lc``. A user the worker
has never seen has no head yet and is scored by the global model (cold start), never refused.

>>> parse_score_request(b'{"user_id": "7", "request_id": "r1", "candidates": []}')
Traceback (most recent call last):
...
stream_ctr.serving.scoring.BadRequest: 422: candidates: List should have at least 1 item after validation, not 0
"""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Sequence
from typing import Annotated, NamedTuple, TypeGuard

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError

from stream_ctr.contracts.arms import CONTROL
from stream_ctr.experiments.assignment import Assignment, Experiment
from stream_ctr.learning.heads import sigmoid
from stream_ctr.learning.state import UserState
from stream_ctr.models.snapshot import LoadedModel

__all__ = [
    "DEADLINE_HEADER",
    "MAX_BODY_BYTES",
    "MAX_CANDIDATES",
    "BadRequest",
    "Exposure",
    "Query",
    "Ranking",
    "ScoreRequest",
    "ScoreResponse",
    "exposure_record",
    "head_for",
    "openapi",
    "parse_deadline",
    "parse_score_request",
    "rank",
    "rank_many",
]

#: Most candidates one request may rank.
MAX_CANDIDATES = 1000
#: Largest request body accepted (413 above it).
MAX_BODY_BYTES = 1024 * 1024
#: Header of a request's deadline: milliseconds from its arrival after which it is dropped (503), not ranked.
DEADLINE_HEADER = "X-Deadline-Ms"
MAX_DEADLINE_MS = 600_000

_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
Id = Annotated[StrictStr, Field(min_length=1, max_length=256)]
#: A float a double holds: what ``allow_inf_nan=False`` accepts anyway, stated as bounds so that the published schema
#: says it (a JSON Schema "number" alone admits 2e308, which a JSON reader makes infinite).
FiniteFloat = Annotated[StrictFloat, Field(ge=-sys.float_info.max, le=sys.float_info.max)]
FeatureValue = StrictStr | FiniteFloat | StrictInt


class Candidate(BaseModel):
    model_config = _STRICT
    item_id: Id
    features: dict[StrictStr, FeatureValue] = Field(default_factory=dict, max_length=256)


class ScoreRequest(BaseModel):
    """Body of ``POST /v1/score``. ``context`` is logged with nothing derived from it (yet)."""

    model_config = _STRICT
    user_id: Id
    request_id: Id
    candidates: list[Candidate] = Field(min_length=1, max_length=MAX_CANDIDATES)
    context: dict[StrictStr, FeatureValue | bool | None] = Field(default_factory=dict, max_length=256)


class ScoredItem(BaseModel):
    item_id: str
    score: float


class ScoreResponse(BaseModel):
    """The candidates ranked by ``score`` (click probability under the user's arm), highest first."""

    request_id: str
    arm: str
    experiment: str
    in_experiment: bool
    model_version: int
    items: list[ScoredItem]


class ExposedItem(BaseModel):
    item_id: str
    score: float
    position: int = Field(ge=0, description="0 = top of the ranking")


class Exposure(BaseModel):
    """What one scoring call served: the value of ``ctr.exposures`` (``topics/schemas/exposure.schema.json``)."""

    request_id: str
    user_id: str
    arm: str
    experiment: str
    in_experiment: bool = Field(description="False: outside coverage, served the control arm, not analysed")
    model_version: int
    ts: float = Field(description="epoch seconds when the ranking was served")
    propensity: float = Field(
        gt=0,
        le=1,
        description="probability that the experiment's assignment gives this user this arm (coverage included): "
        "the logging propensity of off-policy estimates",
    )
    epoch: int = Field(
        0, ge=0, description="the bandit epoch it was served in (0 for a fixed split); older records have none"
    )
    items: list[ExposedItem]


class BadRequest(ValueError):
    """A request the API refuses: ``status`` (4xx) and a message naming what is wrong."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


class Query(NamedTuple):
    """A validated scoring request as the hot path holds it: plain lists, no object per candidate."""

    user_id: str
    request_id: str
    item_ids: list[str]
    features: list[dict]


class Ranking(NamedTuple):
    """One request's candidates ranked, highest score first: the body of :class:`ScoreResponse`."""

    request_id: str
    arm: str
    experiment: str
    in_experiment: bool
    model_version: int
    item_ids: list[str]
    scores: list[float]

    @property
    def items(self) -> list[ScoredItem]:
        return [ScoredItem(item_id=i, score=s) for i, s in zip(self.item_ids, self.scores)]

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "request_id": self.request_id,
                "arm": self.arm,
                "experiment": self.experiment,
                "in_experiment": self.in_experiment,
                "model_version": self.model_version,
                "items": [{"item_id": i, "score": s} for i, s in zip(self.item_ids, self.scores)],
            }
        )


def _describe(err: ValidationError) -> tuple[int, str]:
    first = err.errors(include_url=False)
    if first and first[0]["type"] == "json_invalid":
        return 400, f"malformed JSON: {first[0]['msg']}"
    parts = []
    for e in first[:3]:
        loc = ".".join(str(x) for x in e["loc"]) or "body"
        parts.append(f"{loc}: {e['msg']}")
    more = f" (+{len(first) - 3} more)" if len(first) > 3 else ""
    return 422, "; ".join(parts) + more


def parse_score_request(body: bytes) -> Query:
    """Validate a raw request body; raises :class:`BadRequest` (400, 413 or 422) with the reason.

    The schema is :class:`ScoreRequest`'s. Most bodies are decided by :func:`_plainly_valid`, a check of the
    decoded JSON that accepts only what the schema accepts (about 4x cheaper than building 100 pydantic models);
    anything it does not vouch for is validated by pydantic, whose verdict and message stand.
    """
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(413, f"body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    try:
        query = _plainly_valid(orjson.loads(body))
    except orjson.JSONDecodeError:
        query = None
    return query if query is not None else _validated(body)


def parse_deadline(header: str | None, default_s: float) -> float:
    """Seconds a request may wait for its ranking: its :data:`DEADLINE_HEADER`, else ``default_s``; 400 when the
    header is not milliseconds in (0, 600000]."""
    if header is None:
        return default_s
    try:
        ms = float(header)
    except ValueError:
        ms = float("nan")
    if not 0 < ms <= MAX_DEADLINE_MS:
        raise BadRequest(400, f"{DEADLINE_HEADER} must be milliseconds in (0, {MAX_DEADLINE_MS}], not {header!r}")
    return ms / 1000.0


def _validated(body: bytes) -> Query:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(400, f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        req = ScoreRequest.model_validate_json(text)
    except ValidationError as err:
        raise BadRequest(*_describe(err)) from None
    return Query(req.user_id, req.request_id, [c.item_id for c in req.candidates], [c.features for c in req.candidates])


_TOP_KEYS = frozenset(("user_id", "request_id", "candidates", "context"))
_CANDIDATE_KEYS = frozenset(("item_id", "features"))
_MAX_FIELDS = 256


def _is_id(v: object) -> TypeGuard[str]:
    return type(v) is str and 1 <= len(v) <= 256


def _plain_values(d, extra: tuple = ()) -> bool:
    """A JSON object of at most 256 values, each a str, an int (not a bool) or a finite float (or of ``extra``)."""
    if type(d) is not dict or len(d) > _MAX_FIELDS:
        return False
    for v in d.values():
        t = type(v)
        if not (t is str or t is int or (t is float and math.isfinite(v)) or t in extra):
            return False
    return True


def _plainly_valid(obj) -> Query | None:
    """The request when ``obj`` (decoded JSON) is certainly valid under :class:`ScoreRequest`, else None (undecided:
    pydantic decides). Keys of a decoded JSON object are always str; a bool is not an int for the strict schema."""
    if type(obj) is not dict or not obj.keys() <= _TOP_KEYS:
        return None
    user, request_id, candidates = obj.get("user_id"), obj.get("request_id"), obj.get("candidates")
    if not (
        _is_id(user) and _is_id(request_id) and type(candidates) is list and 1 <= len(candidates) <= MAX_CANDIDATES
    ):
        return None
    if "context" in obj and not _plain_values(obj["context"], (bool, type(None))):
        return None
    item_ids, features = [], []
    for c in candidates:
        if type(c) is not dict or not c.keys() <= _CANDIDATE_KEYS or not _is_id(c.get("item_id")):
            return None
        f = c.get("features", _NO_FEATURES)
        if f is not _NO_FEATURES and not _plain_values(f):
            return None
        item_ids.append(c["item_id"])
        features.append(f)
    return Query(user, request_id, item_ids, features)


_NO_FEATURES: dict = {}


def rank_many(
    queries: Sequence[Query],
    model: LoadedModel,
    heads: Sequence,
    assignments: Sequence[Assignment],
    experiment: Experiment,
) -> list[Ranking]:
    """Rank several requests with one forward pass over all their candidates: ``heads[k]`` is the head that
    scores ``queries[k]`` (None: the global model alone). The ranking of a request does not depend on the others
    it is batched with."""
    rows = [(q.user_id, item, f) for q in queries for item, f in zip(q.item_ids, q.features)]
    g, h = model.forward_rows(rows)
    out, start = [], 0
    for q, head, a in zip(queries, heads, assignments):
        part = slice(start, start + len(q.item_ids))
        start = part.stop
        probs = head.predict_proba_many(g[part], h[part]) if head is not None else sigmoid(g[part])
        order = np.argsort(-probs, kind="stable")
        out.append(
            Ranking(
                q.request_id,
                a.arm,
                experiment.name,
                a.in_experiment,
                model.version,
                [q.item_ids[i] for i in order.tolist()],
                probs[order].tolist(),
            )
        )
    return out


def head_for(state: UserState | None, assignment: Assignment, model: LoadedModel):
    """The head that scores a user under ``assignment``: None for the control arm, a cold-start user, or a head
    learned on a model of another width (the global model alone then)."""
    if state is None or assignment.arm == CONTROL:
        return None
    head = state.heads.get(assignment.arm)
    return head if head is not None and len(head.w) == model.rep_dim else None


def rank(
    request: Query, model: LoadedModel, state: UserState | None, assignment: Assignment, experiment: Experiment
) -> Ranking:
    """Score and rank ``request``'s candidates for the user's arm (stable for equal scores)."""
    return rank_many([request], model, [head_for(state, assignment, model)], [assignment], experiment)[0]


def exposure_record(
    request: Query, ranking: Ranking, propensity: float, ts: float | None = None, epoch: int = 0
) -> dict:
    """The ``ctr.exposures`` value of one ranking (:class:`Exposure`, ``topics/schemas/exposure.schema.json``);
    ``propensity``: :meth:`Experiment.propensity <stream_ctr.experiments.assignment.Experiment.propensity>` of its
    arm; ``epoch``: the experiment's bandit epoch."""
    return {
        "request_id": request.request_id,
        "user_id": request.user_id,
        "arm": ranking.arm,
        "experiment": ranking.experiment,
        "in_experiment": ranking.in_experiment,
        "model_version": ranking.model_version,
        "ts": time.time() if ts is None else ts,
        "propensity": propensity,
        "epoch": epoch,
        "items": [
            {"item_id": i, "score": s, "position": k} for k, (i, s) in enumerate(zip(ranking.item_ids, ranking.scores))
        ],
    }


@functools.cache
def openapi() -> dict:
    """The OpenAPI 3.1 description of the scoring endpoint (served at ``GET /openapi.json``)."""
    schemas: dict = {}
    refs = {}
    for model in (ScoreRequest, ScoreResponse):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        refs[model] = {"$ref": f"#/components/schemas/{model.__name__}"}
    error = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
    errors = {
        str(code): {"description": why, "content": {"application/json": {"schema": error}}}
        for code, why in (
            (400, "malformed JSON or invalid UTF-8"),
            (413, f"body over {MAX_BODY_BYTES} bytes"),
            (422, "the body breaks the request schema"),
            (429, "over capacity: refused at once, retry after Retry-After seconds"),
            (503, "no model yet, or the request's deadline (X-Deadline-Ms) passed while it waited"),
        )
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "stream-ctr scoring API", "version": "1"},
        "paths": {
            "/v1/score": {
                "post": {
                    "summary": "Rank candidate items for a user under the user's experiment arm",
                    "parameters": [
                        {
                            "name": DEADLINE_HEADER,
                            "in": "header",
                            "required": False,
                            "description": "milliseconds the client waits; a request still queued after them is "
                            "dropped with 503 (default: the worker's STREAM_CTR_SERVING_DEADLINE_MS)",
                            "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DEADLINE_MS},
                        }
                    ],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": refs[ScoreRequest]}}},
                    "responses": {
                        "200": {
                            "description": "candidates ranked by score, highest first",
                            "content": {"application/json": {"schema": refs[ScoreResponse]}},
                        },
                        **errors,
                    },
                }
            }
        },
        "components": {"schemas": schemas},
    }
