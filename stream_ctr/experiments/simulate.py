"""Closed-loop simulation: synthetic users with a known taste request rankings, and click on what they are shown.

A replayed log cannot show a treatment effect: its clicks were caused by whatever ranked the items back then.
Here each request comes from a :class:`~stream_ctr.data.synthetic.SyntheticWorld` user, asks a scorer
(``POST /v1/score`` in production; any ``request dict -> response dict`` callable here) to rank sampled
candidates, shows the top ``k``, and draws clicks from the user's TRUE probabilities. Those events (clicks and
non-clicks of the shown items, each with its ``request_id``) go back into the stream, so what the service learns
changes what it serves next.

The tallies per arm (the response's ``arm``) keep, besides clicks, the sum of true probabilities of what was
served (its expected CTR: far less noisy than clicks) and two bounds from the same requests: the ORACLE ceiling
(the k best candidates by true probability) and the RANDOM floor (the mean over all candidates). Per-user
per-arm tallies let a caller compute delta-method confidence intervals. This module does no HTTP and no Kafka:
the caller passes the scorer and the event sink.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from stream_ctr.contracts.events import Event
from stream_ctr.data.synthetic import SyntheticWorld

__all__ = ["ClosedLoop", "InvalidResponse", "SimConfig", "Tally", "render_markdown"]

Scorer = Callable[[dict], dict]


@dataclass(frozen=True)
class SimConfig:
    """``requests`` to make, ``candidates`` sampled per request, ``k`` shown; event ``ts`` starts at
    ``start_ts`` and advances ``seconds_per_event`` per shown item, so it strictly increases.

    >>> SimConfig(requests=10, candidates=3, k=5)
    Traceback (most recent call last):
    ...
    ValueError: k must be <= candidates (3), got 5
    """

    requests: int
    candidates: int = 50
    k: int = 5
    seed: int = 0
    start_ts: float = 0.0
    seconds_per_event: float = 0.001

    def __post_init__(self):
        for name in ("requests", "candidates", "k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.k > self.candidates:
            raise ValueError(f"k must be <= candidates ({self.candidates}), got {self.k}")
        if not math.isfinite(self.start_ts) or self.start_ts < 0:
            raise ValueError(f"start_ts must be non-negative epoch seconds, got {self.start_ts!r}")
        if not math.isfinite(self.seconds_per_event) or self.seconds_per_event <= 0:
            raise ValueError(f"seconds_per_event must be positive, got {self.seconds_per_event!r}")


class InvalidResponse(ValueError):
    """A scorer response that breaks the ``/v1/score`` contract for the request it answers."""


@dataclass
class Tally:
    """Sums over served requests. ``expected``: true probabilities of the shown items; ``oracle``: of the k best
    candidates by true probability; ``random``: k times the mean over all candidates. Each divided by
    ``impressions`` is a CTR."""

    requests: int = 0
    impressions: int = 0
    clicks: int = 0
    expected: float = 0.0
    oracle: float = 0.0
    random: float = 0.0

    def add(self, other: Tally) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class ClosedLoop:
    """Makes requests from ``world``'s users, shows the top ``cfg.k`` of each response and draws clicks.

    ``arms[arm]`` is that arm's :class:`Tally`; ``per_user[user_id][arm]`` the same per user (at most one entry
    per world user)."""

    def __init__(self, world: SyntheticWorld, cfg: SimConfig):
        if cfg.candidates > len(world.item_ids):
            raise ValueError(f"candidates ({cfg.candidates}) exceeds the world's {len(world.item_ids)} items")
        self.world = world
        self.cfg = cfg
        self.arms: dict[str, Tally] = {}
        self.per_user: dict[str, dict[str, Tally]] = {}
        self._rng = np.random.default_rng(cfg.seed)
        self._requests = 0

    def step(self, score: Scorer) -> list[Event]:
        """One request: returns the events of the shown items (label 1 for a click) in rank order."""
        n = self._requests
        self._requests += 1  # even if the response is rejected: request ids are never reused
        user = int(self._rng.integers(len(self.world.user_ids)))
        candidates = self._rng.choice(len(self.world.item_ids), size=self.cfg.candidates, replace=False)
        request = self._request(n, user, candidates)
        arm, shown = self._shown(request, score(request), candidates)
        p = self.world.prob(user, candidates)
        p_shown = p[shown]
        clicks = self._rng.random(self.cfg.k) < p_shown
        request_tally = Tally(
            requests=1,
            impressions=self.cfg.k,
            clicks=int(clicks.sum()),
            expected=float(p_shown.sum()),
            oracle=float(np.sort(p)[-self.cfg.k :].sum()),
            random=float(p.mean() * self.cfg.k),
        )
        user_id = request["user_id"]
        self.arms.setdefault(arm, Tally()).add(request_tally)
        self.per_user.setdefault(user_id, {}).setdefault(arm, Tally()).add(request_tally)
        first = n * self.cfg.k
        return [
            Event(
                event_id=f"{request['request_id']}-{rank}",
                user_id=user_id,
                item_id=self.world.item_ids[candidates[i]],
                ts=self.cfg.start_ts + (first + rank) * self.cfg.seconds_per_event,
                label=int(clicked),
                features=self.world.features(user, candidates[i]),
                request_id=request["request_id"],
            )
            for rank, (i, clicked) in enumerate(zip(shown, clicks))
        ]

    def run(self, score: Scorer, sink: Callable[[Event], None], progress: Callable[[int], None] | None = None):
        """``cfg.requests`` steps; every event goes to ``sink``, and ``progress`` gets the requests done so far."""
        for n in range(1, self.cfg.requests + 1):
            for event in self.step(score):
                sink(event)
            if progress is not None:
                progress(n)

    def _request(self, n: int, user: int, candidates: np.ndarray) -> dict:
        return {
            "user_id": self.world.user_ids[user],
            "request_id": f"sim-{self.cfg.seed}-{n}",
            "candidates": [
                {"item_id": self.world.item_ids[i], "features": self.world.features(user, i)} for i in candidates
            ],
            "context": {"surface": "sim"},
        }

    def _shown(self, request: dict, response: dict, candidates: np.ndarray) -> tuple[str, list[int]]:
        """Check ``response`` against the contract; return its arm and the candidate positions of its top k."""
        rid = request["request_id"]
        if not isinstance(response, dict) or response.get("request_id") != rid:
            got = response.get("request_id") if isinstance(response, dict) else type(response).__name__
            raise InvalidResponse(f"response must echo request_id {rid!r}, got {got!r}")
        arm = response.get("arm")
        if not isinstance(arm, str) or not arm:
            raise InvalidResponse(f"{rid}: arm must be a non-empty string, got {arm!r}")
        items = response.get("items")
        if not isinstance(items, list) or len(items) < self.cfg.k:
            raise InvalidResponse(f"{rid}: items must be a list of at least k={self.cfg.k} ranked items")
        position = {self.world.item_ids[i]: n for n, i in enumerate(candidates)}
        shown, last = [], math.inf
        for item in items[: self.cfg.k]:
            item_id = item.get("item_id") if isinstance(item, dict) else None
            if not isinstance(item_id, str) or item_id not in position or position[item_id] in shown:
                raise InvalidResponse(f"{rid}: item {item_id!r} is not a distinct candidate of the request")
            s = item.get("score")
            if isinstance(s, bool) or not isinstance(s, (int, float)) or s > last:
                raise InvalidResponse(f"{rid}: items must carry numeric scores, highest first; got {s!r}")
            shown.append(position[item_id])
            last = s
        return arm, shown

    def report(self) -> dict:
        """Per arm and overall: requests, users, impressions, clicks and the CTRs (``None`` before any request)."""
        overall = Tally()
        for tally in self.arms.values():
            overall.add(tally)
        users = {arm: sum(arm in by_arm for by_arm in self.per_user.values()) for arm in self.arms}
        return {
            "arms": {arm: _summary(t, users[arm]) for arm, t in sorted(self.arms.items())},
            "overall": _summary(overall, len(self.per_user)),
        }


def _summary(t: Tally, users: int) -> dict:
    def ratio(x: float) -> float | None:
        return x / t.impressions if t.impressions else None

    return {
        "requests": t.requests,
        "users": users,
        "impressions": t.impressions,
        "clicks": t.clicks,
        "ctr": ratio(t.clicks),
        "expected_ctr": ratio(t.expected),
        "oracle_ctr": ratio(t.oracle),
        "random_ctr": ratio(t.random),
    }


def render_markdown(report: dict) -> str:
    """A table of :meth:`ClosedLoop.report`: each arm, then all arms, between the random floor and the oracle.

    >>> row = dict(requests=2, users=1, impressions=10, clicks=3, ctr=0.3, expected_ctr=0.25,
    ...            oracle_ctr=0.4, random_ctr=0.1)
    >>> print(render_markdown({"arms": {"global": row}, "overall": row}).splitlines()[2])
    | global | 2 | 1 | 10 | 3 | 0.3000 | 0.2500 | 0.1000 | 0.4000 |
    """
    lines = [
        "| arm | requests | users | impressions | clicks | CTR | expected CTR | random floor | oracle ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [*report["arms"].items(), ("**all**", report["overall"])]
    for name, r in rows:
        rates = (r[key] for key in ("ctr", "expected_ctr", "random_ctr", "oracle_ctr"))
        cells = [name, r["requests"], r["users"], r["impressions"], r["clicks"]]
        cells += ["—" if x is None else f"{x:.4f}" for x in rates]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)
