"""Serving: the ``POST /v1/score`` contract, its validation, the ranking itself and the exposure record it logs.

Kafka-free and HTTP-free, so the worker's view (``agents/views.py``) is a thin shell and every rule here is tested
directly. A request names a user and up to :data:`MAX_CANDIDATES` candidate items with their features; the
response ranks them by the user's arm: the global snapshot alone for ``global`` (and for users outside the
experiment's coverage), the snapshot plus the user's head of that arm for ``ft`` / ``ft_lc``. A user the worker
has never seen has no head yet and is scored by the global model (cold start), never refused.

>>> parse_score_request(b'{"user_id": "7", "request_id": "r1", "candidates": []}')
Traceback (most recent call last):
...
stream_ctr.serving.BadRequest: 422: candidates: List should have at least 1 item after validation, not 0
"""

from __future__ import annotations

import sys
import time
from typing import Annotated, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError

from .ab.assignment import Assignment, Experiment
from .arms import CONTROL
from .heads import sigmoid
from .snapshot import LoadedModel
from .state import UserState

__all__ = ["MAX_BODY_BYTES", "MAX_CANDIDATES", "BadRequest", "Exposure", "ScoreRequest", "ScoreResponse",
           "exposure_record", "openapi", "parse_score_request", "rank"]

#: Most candidates one request may rank.
MAX_CANDIDATES = 1000
#: Largest request body accepted (413 above it).
MAX_BODY_BYTES = 1024 * 1024

_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
Id = Annotated[StrictStr, Field(min_length=1, max_length=256)]
#: A float a double holds: what ``allow_inf_nan=False`` accepts anyway, stated as bounds so that the published schema
#: says it (a JSON Schema "number" alone admits 2e308, which a JSON reader makes infinite).
FiniteFloat = Annotated[StrictFloat, Field(ge=-sys.float_info.max, le=sys.float_info.max)]
FeatureValue = Union[StrictStr, FiniteFloat, StrictInt]


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
    context: dict[StrictStr, Union[FeatureValue, bool, None]] = Field(default_factory=dict, max_length=256)


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
    items: list[ExposedItem]


class BadRequest(ValueError):
    """A request the API refuses: ``status`` (4xx) and a message naming what is wrong."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


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


def parse_score_request(body: bytes) -> ScoreRequest:
    """Validate a raw request body; raises :class:`BadRequest` (400, 413 or 422) with the reason."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(413, f"body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(400, f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return ScoreRequest.model_validate_json(text)
    except ValidationError as err:
        raise BadRequest(*_describe(err)) from None


def rank(request: ScoreRequest, model: LoadedModel, state: UserState | None, assignment: Assignment,
         experiment: Experiment) -> ScoreResponse:
    """Score and rank ``request``'s candidates for the user's arm (stable for equal scores)."""
    rows = [(request.user_id, c.item_id, c.features) for c in request.candidates]
    g, h = model.forward_rows(rows)
    head = state.heads.get(assignment.arm) if state is not None and assignment.arm != CONTROL else None
    if head is not None and len(head.w) == h.shape[1]:
        probs = head.predict_proba_many(g, h)
    else:  # control arm, a cold-start user, or a head from a model of another width
        probs = sigmoid(g)
    order = np.argsort(-probs, kind="stable")
    items = [ScoredItem(item_id=rows[i][1], score=float(probs[i])) for i in order]
    return ScoreResponse(request_id=request.request_id, arm=assignment.arm, experiment=experiment.name,
                         in_experiment=assignment.in_experiment, model_version=model.version, items=items)


def exposure_record(request: ScoreRequest, response: ScoreResponse, ts: float | None = None) -> Exposure:
    items = [ExposedItem(item_id=it.item_id, score=it.score, position=i) for i, it in enumerate(response.items)]
    return Exposure(request_id=request.request_id, user_id=request.user_id, arm=response.arm,
                    experiment=response.experiment, in_experiment=response.in_experiment,
                    model_version=response.model_version, ts=time.time() if ts is None else ts, items=items)


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
    errors = {str(code): {"description": why, "content": {"application/json": {"schema": error}}}
              for code, why in ((400, "malformed JSON or invalid UTF-8"), (413, f"body over {MAX_BODY_BYTES} bytes"),
                                (422, "the body breaks the request schema"), (503, "no model yet"))}
    return {
        "openapi": "3.1.0",
        "info": {"title": "stream-ctr scoring API", "version": "1"},
        "paths": {"/v1/score": {"post": {
            "summary": "Rank candidate items for a user under the user's experiment arm",
            "requestBody": {"required": True, "content": {"application/json": {"schema": refs[ScoreRequest]}}},
            "responses": {"200": {"description": "candidates ranked by score, highest first",
                                  "content": {"application/json": {"schema": refs[ScoreResponse]}}}, **errors},
        }}},
        "components": {"schemas": schemas},
    }
