"""From exposures to per-arm results: which scoring request an event answers, and what each arm achieved.

The worker that owns a user's partition serves the user's scoring requests (other workers forward them) and
consumes the user's events, so attribution is local: :class:`PendingExposures` keeps what each recent request
served (bounded in count and age), and an event carrying that ``request_id`` and one of its items is an
*impression* of the request's arm, a click if its label is 1. :class:`ArmResults` keeps running per-arm totals
(requests, impressions, clicks, users, logloss and calibration sums), a window of served scores per arm for
gAUC, and per user with an impression three running sums (impressions, clicks, logloss: :class:`UserTallies`,
keyed by a hash of the user id, 24 bytes of numbers and a dict entry a user) from which each refresh computes
every treatment arm's always-valid interval against the control (:mod:`.sequential`, the users being the
randomised units) and the guardrails' decisions (:mod:`.guardrails`).

A bandit's results are per epoch: the worker resets them when it moves to a new epoch (:meth:`ArmResults.reset`),
since each epoch has its own split (users are reshuffled, the weights change) and pooling epochs would compare arms
over different periods and mix users' arms. An event answering an exposure of a finished epoch is not counted
(:attr:`Served.epoch`); it is on the topics, where the allocator and ``ab ope`` count it.

>>> pending = PendingExposures(capacity=2, window_s=60)
>>> pending.add("r1", Served("ft", True, ts=100.0, items={"i1": 0.9, "i2": 0.1}, user_id="u7"))
>>> pending.match("r1", "i2", now=120.0)
(Served(arm='ft', in_experiment=True, ts=100.0, items={'i1': 0.9, 'i2': 0.1}, user_id='u7', epoch=0), 0.1)
>>> pending.match("r1", "i2", now=170.0), pending.match("r1", "i9", now=120.0), pending.match("r7", "i1", 120.0)
('expired', 'item_not_served', 'unknown_request')
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from stream_ctr.contracts.arms import CONTROL
from stream_ctr.experiments import guardrails as gr
from stream_ctr.experiments.assignment import Experiment
from stream_ctr.experiments.sequential import ALPHA, SequentialDifference, sequential_difference, srm_p_value
from stream_ctr.experiments.stats import SRM_ALPHA, srm_test
from stream_ctr.quality.metrics import gauc, log_loss_one, user_key
from stream_ctr.quality.rows import ScoreRows

__all__ = [
    "LIVE_METRICS",
    "ArmResults",
    "PendingExposures",
    "Served",
    "UNATTRIBUTED",
    "UserTallies",
    "WaitingEvents",
]

#: Why an event with a ``request_id`` was not attributed (a closed set: it is a Prometheus label).
UNATTRIBUTED = ("unknown_request", "expired", "item_not_served")
#: The ratio metrics compared live per treatment arm: numerator column of :class:`UserTallies` over impressions.
LIVE_METRICS = {"ctr": 1, "logloss": 2}


class UserTallies:
    """Per-user running sums of one arm, ``[impressions, clicks, logloss]`` a row, keyed by an integer hash of the
    user id (:func:`~stream_ctr.quality.metrics.user_key`); grown by doubling.

    >>> t = UserTallies()
    >>> t.add(7, 1, 0.5); t.add(7, 0, 0.25); t.add(9, 1, 0.1)
    >>> t.rows().tolist()
    [[2.0, 1.0, 0.75], [1.0, 1.0, 0.1]]
    >>> t.forget(7), t.rows().tolist()
    (True, [[1.0, 1.0, 0.1]])
    """

    def __init__(self, capacity: int = 64):
        self.index: dict[int, int] = {}
        self.data = np.zeros((capacity, 3))

    def add(self, key: int, label: int, loss: float) -> None:
        row = self.index.get(key)
        if row is None:
            row = self.index[key] = len(self.index)
            if row == len(self.data):
                self.data = np.concatenate([self.data, np.zeros_like(self.data)])
        r = self.data[row]
        r[0] += 1
        r[1] += label
        r[2] += loss

    def forget(self, key: int) -> bool:
        """Zero the user's row (an erasure; it no longer counts as a unit)."""
        row = self.index.pop(key, None)
        if row is not None:
            self.data[row] = 0.0
            self.index[-1 - row] = row  # the row stays taken, under a key no user has (user keys are >= 0)
        return row is not None

    def rows(self) -> np.ndarray:
        """The rows of the users with an impression."""
        d = self.data[: len(self.index)]
        return d[d[:, 0] > 0]


class Served(NamedTuple):
    """One served request. A tuple of atomic values (the score map holds only str and float), so the garbage
    collector stops tracking it after one pass: 100,000 of them pending cost a full collection nothing."""

    arm: str
    in_experiment: bool
    ts: float
    items: Mapping[str, float]  # item id -> the score it was served with
    user_id: str = ""  # whose request it was (for an erasure)
    epoch: int = 0  # the bandit epoch it was served in (0 for a fixed split)


class PendingExposures:
    """request_id -> :class:`Served`, the newest ``capacity`` requests of the last ``window_s`` seconds."""

    def __init__(self, capacity: int, window_s: float):
        self.capacity, self.window_s = capacity, window_s
        self._served: OrderedDict[str, Served] = OrderedDict()

    def __len__(self) -> int:
        return len(self._served)

    def add(self, request_id: str, served: Served) -> None:
        self._served[request_id] = served
        self._served.move_to_end(request_id)
        while len(self._served) > self.capacity:
            self._served.popitem(last=False)

    def forget_user(self, user_id: str) -> int:
        """Drop the user's pending requests (an erasure); returns how many there were."""
        gone = [rid for rid, served in self._served.items() if served.user_id == user_id]
        for rid in gone:
            del self._served[rid]
        return len(gone)

    def match(self, request_id: str, item_id: str, now: float) -> tuple[Served, float] | str:
        """``(served, score)`` for an event answering ``request_id`` with ``item_id``, or why not."""
        self._expire(now)
        served = self._served.get(request_id)
        if served is None:
            return "unknown_request"
        if now - served.ts > self.window_s:
            return "expired"
        score = served.items.get(item_id)
        return "item_not_served" if score is None else (served, score)

    def _expire(self, now: float) -> None:
        while self._served:
            oldest = next(iter(self._served.values()))
            if now - oldest.ts <= 2 * self.window_s:  # a grace period, so "expired" is reported, not "unknown"
                return
            self._served.popitem(last=False)


class WaitingEvents:
    """Events naming a request this worker holds no exposure of yet, kept ``wait_s`` seconds (at most ``capacity``
    of them) for the exposure to arrive.

    A scorer process (``stream-ctr scorer``) serves without attributing; the user's worker learns of what it served
    from ``ctr.exposures``, and a client may answer a ranking before that record reaches the worker. Such an event
    waits here; :meth:`take` hands it back when the exposure arrives (a join over a short window). One that waited
    ``wait_s``, or was pushed out by newer ones, is an ``unknown_request`` (:meth:`expire` counts them).

    >>> waiting = WaitingEvents(wait_s=5.0, capacity=2)
    >>> waiting.park("r1", "e1", "u1", now=100.0); waiting.park("r1", "e2", "u1", now=101.0)
    >>> waiting.take("r1"), waiting.take("r1")
    (['e1', 'e2'], [])
    >>> waiting.park("r2", "e3", "u1", now=100.0); waiting.expire(now=104.0), waiting.expire(now=105.5)
    (0, 1)
    """

    def __init__(self, wait_s: float, capacity: int):
        self.wait_s, self.capacity = wait_s, capacity
        self._events: OrderedDict[str, list] = OrderedDict()  # request id -> [(parked at, event, user id)]
        self._count = 0
        self._gone = 0  # pushed out by newer ones since the last expire()

    def __len__(self) -> int:
        return self._count

    def park(self, request_id: str, event, user_id: str, now: float) -> None:
        self._events.setdefault(request_id, []).append((now, event, user_id))
        self._count += 1
        while self._count > self.capacity:
            self._gone += self._drop(next(iter(self._events)))

    def take(self, request_id: str) -> list:
        """The events waiting for ``request_id`` (none: an empty list), no longer waiting."""
        waited = self._events.pop(request_id, [])
        self._count -= len(waited)
        return [event for _, event, _ in waited]

    def expire(self, now: float) -> int:
        """How many events stopped waiting unmatched since the last call (waited ``wait_s``, or pushed out)."""
        gone, self._gone = self._gone, 0
        while self._events:
            request_id, waited = next(iter(self._events.items()))
            if now - waited[0][0] < self.wait_s:
                break
            gone += self._drop(request_id)
        return gone

    def forget_user(self, user_id: str) -> int:
        """Drop the user's waiting events (an erasure); returns how many there were."""
        gone = 0
        for request_id in [rid for rid, waited in self._events.items() if waited[0][2] == user_id]:
            gone += self._drop(request_id)
        return gone

    def _drop(self, request_id: str) -> int:
        n = len(self._events.pop(request_id))
        self._count -= n
        return n


class ArmResults:
    """Running per-arm results of the experiment on this worker (only users inside coverage are analysed)."""

    def __init__(self, experiment: Experiment, window: int = 20000):
        self.experiment, self.window = experiment, window
        arms = [a.name for a in experiment.arms]
        self.totals = {
            arm: dict.fromkeys(("requests", "impressions", "clicks", "users", "score", "logloss"), 0.0) for arm in arms
        }
        self.windows = {arm: ScoreRows(("score",), window) for arm in arms}  # the newest ``window`` impressions
        self.unattributed = dict.fromkeys(UNATTRIBUTED, 0)
        self.gauc = dict.fromkeys(arms, float("nan"))
        self.tallies = {arm: UserTallies() for arm in arms}
        #: Treatment arm -> metric -> its difference with the control, as of the last refresh.
        self.live: dict[str, dict[str, SequentialDifference]] = {}
        #: Treatment arm -> metric -> the guardrail's interval (None while too few users), as of the last refresh.
        self.guarded: dict[str, dict[str, tuple[float, float] | None]] = {}

    def reset(self, experiment: Experiment) -> None:
        """Start afresh with ``experiment`` (a bandit's next epoch): every total, window, user sum and interval
        back to empty. Exported as counters, the per-arm totals restart from 0 (a counter reset to Prometheus).

        >>> from stream_ctr.experiments.assignment import Experiment
        >>> results = ArmResults(Experiment.default())
        >>> results.requested("ft"); results.impression("ft", "u1", 1, 0.5)
        >>> results.reset(Experiment.default())
        >>> results.totals["ft"]["requests"], len(results.tallies["ft"].rows())
        (0.0, 0)
        """
        self.__init__(experiment, self.window)  # type: ignore[misc]

    def requested(self, arm: str) -> None:
        self.totals[arm]["requests"] += 1

    def impression(self, arm: str, user_id: str, label: int, score: float) -> None:
        t = self.totals[arm]
        t["impressions"] += 1
        t["clicks"] += label
        t["score"] += float(score)
        loss = log_loss_one(label, score)
        t["logloss"] += loss
        key = user_key(user_id)
        self.windows[arm].append(key, label, (score,))
        self.tallies[arm].add(key, label, loss)

    def forget_user(self, user_id: str) -> int:
        """Drop the user's impressions from every arm's window and the user's running sums (an erasure; the
        running totals hold no user); returns how many window rows went."""
        key = user_key(user_id)
        for tallies in self.tallies.values():
            tallies.forget(key)
        return sum(window.forget(key) for window in self.windows.values())

    def new_user(self, arm: str) -> None:
        self.totals[arm]["users"] += 1

    def refresh(self) -> None:
        self.gauc = {arm: _windowed_gauc(window) for arm, window in self.windows.items()}
        self.live, self.guarded = self._compare()

    def _compare(self) -> tuple[dict, dict]:
        """Every treatment arm against the control, per live metric: the always-valid and fixed-horizon
        intervals (at :data:`~.sequential.ALPHA`) and, for a guardrail's metric, the interval at its level."""
        exp, guard = self.experiment, self.experiment.guardrails
        if CONTROL not in self.tallies:
            return {}, {}
        treatments = [arm for arm in self.tallies if arm != CONTROL]
        control = self.tallies[CONTROL].rows()
        live: dict[str, dict[str, SequentialDifference]] = {}
        guarded: dict[str, dict[str, tuple[float, float] | None]] = {}
        for arm in treatments:
            rows = self.tallies[arm].rows()
            if min(len(rows), len(control)) < 2:
                continue
            live[arm] = {
                metric: sequential_difference(
                    (control[:, col], control[:, 0]), (rows[:, col], rows[:, 0]), None, ALPHA, exp.planned_users
                )
                for metric, col in LIVE_METRICS.items()
            }
            if guard is not None:
                enough = min(len(rows), len(control)) >= guard.min_users
                level = guard.comparison_alpha(len(treatments))
                users = (len(control), len(rows))
                guarded[arm] = {
                    m: gr.guardrail_interval(live[arm][m], level, exp.planned_users, users) if enough else None
                    for m, _ in guard.tolerances
                }
        return live, guarded

    def breaches(self) -> list[gr.Breach]:
        """The guardrails breached significantly at the last refresh, by arms not yet stopped."""
        guard = self.experiment.guardrails
        if guard is None:
            return []
        return gr.breaches(guard, self.guarded, set(self.experiment.stopped))

    def guardrail_states(self) -> dict[tuple[str, str], int]:
        """``(arm, metric) -> state`` of every treatment arm and guardrail: breached (1) if the arm was stopped by
        that guardrail, else waiting (-1) while too few users, else holding (0)."""
        guard, stopped = self.experiment.guardrails, self.experiment.stopped
        if guard is None:
            return {}
        out = {}
        for arm in self.tallies:
            if arm == CONTROL:
                continue
            for metric, _ in guard.tolerances:
                if arm in stopped and stopped[arm].guardrail == metric:
                    out[(arm, metric)] = gr.BREACHED
                elif self.guarded.get(arm, {}).get(metric) is None:
                    out[(arm, metric)] = gr.WAITING
                else:
                    out[(arm, metric)] = gr.HOLDING
        return out

    def srm(self) -> dict:
        """The sample-ratio check of this worker's users per arm: ``p_value`` is always valid (read at every
        scrape; :func:`~stream_ctr.experiments.sequential.srm_p_value`), ``chi2`` and ``p_value_fixed`` the
        fixed-horizon chi-square (valid at one planned reading). Stopped arms are left out: their users are no
        longer counted, and the users of the other arms keep the ratio of those arms' weights."""
        weights = self.experiment.live_weights
        users = {arm: int(t["users"]) for arm, t in self.totals.items() if arm in weights}
        fixed, p = srm_test(users, weights), srm_p_value(users, weights)
        return {"chi2": float(fixed.chi2), "p_value_fixed": float(fixed.p_value), "p_value": p, "alarm": p < SRM_ALPHA}

    def live_summary(self) -> dict:
        """Per treatment arm and metric: the difference with the control and its intervals (JSON-ready)."""
        out: dict[str, dict] = {}
        for arm, metrics in self.live.items():
            out[arm] = {}
            for metric, d in metrics.items():
                out[arm][metric] = {
                    "delta": d.delta,
                    "always_valid": _finite_pair(d.sequence),
                    "fixed_horizon": _finite_pair(d.fixed),
                    "guardrail": self.guarded.get(arm, {}).get(metric),
                    "users": d.users,
                }
        return out

    def summary(self) -> dict:
        """Per arm: requests, impressions, clicks, users, CTR, logloss, calibration, windowed gAUC; and the SRM."""
        arms = {}
        for arm, t in self.totals.items():
            n, clicks = t["impressions"], t["clicks"]
            arms[arm] = {k: int(t[k]) for k in ("requests", "impressions", "clicks", "users")} | {
                "ctr": clicks / n if n else None,
                "logloss": t["logloss"] / n if n else None,
                "calibration": t["score"] / clicks if clicks else None,
                "gauc": _finite(self.gauc[arm]),
            }
        return {
            "experiment": self.experiment.name,
            "arms": arms,
            "unattributed": dict(self.unattributed),
            "srm": self.srm(),
            "live": self.live_summary(),
            "stopped": {arm: stop.to_dict() for arm, stop in self.experiment.stopped.items()},
            "guardrails": [{"arm": a, "metric": m, "state": v} for (a, m), v in self.guardrail_states().items()],
        }


def _windowed_gauc(window: ScoreRows) -> float:
    users, labels, scores = window.view()
    return gauc(users, labels, scores["score"])


def _finite(x: float) -> float | None:
    return None if x != x else x


def _finite_pair(pair: tuple[float, float]) -> list[float] | None:
    return list(pair) if all(math.isfinite(v) for v in pair) else None
