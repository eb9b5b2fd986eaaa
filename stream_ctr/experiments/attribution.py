"""From exposures to per-arm results: which scoring request an event answers, and what each arm achieved.

The worker that owns a user's partition serves the user's scoring requests (other workers forward them) and
consumes the user's events, so attribution is local: :class:`PendingExposures` keeps what each recent request
served (bounded in count and age), and an event carrying that ``request_id`` and one of its items is an
*impression* of the request's arm, a click if its label is 1. :class:`ArmResults` keeps running per-arm totals
(requests, impressions, clicks, users, logloss and calibration sums) and a window of served scores per arm for
gAUC: memory is bounded by the window, whatever the number of users or events.

>>> pending = PendingExposures(capacity=2, window_s=60)
>>> pending.add("r1", Served("ft", True, ts=100.0, items={"i1": 0.9, "i2": 0.1}, user_id="u7"))
>>> pending.match("r1", "i2", now=120.0)
(Served(arm='ft', in_experiment=True, ts=100.0, items={'i1': 0.9, 'i2': 0.1}, user_id='u7'), 0.1)
>>> pending.match("r1", "i2", now=170.0), pending.match("r1", "i9", now=120.0), pending.match("r7", "i1", 120.0)
('expired', 'item_not_served', 'unknown_request')
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import NamedTuple

from stream_ctr.experiments.assignment import Experiment
from stream_ctr.experiments.sequential import srm_p_value
from stream_ctr.experiments.stats import SRM_ALPHA, srm_test
from stream_ctr.quality.metrics import gauc, log_loss_one, user_key
from stream_ctr.quality.rows import ScoreRows

__all__ = ["ArmResults", "PendingExposures", "Served", "UNATTRIBUTED"]

#: Why an event with a ``request_id`` was not attributed (a closed set: it is a Prometheus label).
UNATTRIBUTED = ("unknown_request", "expired", "item_not_served")


class Served(NamedTuple):
    """One served request. A tuple of atomic values (the score map holds only str and float), so the garbage
    collector stops tracking it after one pass: 100,000 of them pending cost a full collection nothing."""

    arm: str
    in_experiment: bool
    ts: float
    items: Mapping[str, float]  # item id -> the score it was served with
    user_id: str = ""  # whose request it was (for an erasure)


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


class ArmResults:
    """Running per-arm results of the experiment on this worker (only users inside coverage are analysed)."""

    def __init__(self, experiment: Experiment, window: int = 20000):
        self.experiment = experiment
        arms = [a.name for a in experiment.arms]
        self.totals = {
            arm: dict.fromkeys(("requests", "impressions", "clicks", "users", "score", "logloss"), 0.0) for arm in arms
        }
        self.windows = {arm: ScoreRows(("score",), window) for arm in arms}  # the newest ``window`` impressions
        self.unattributed = dict.fromkeys(UNATTRIBUTED, 0)
        self.gauc = dict.fromkeys(arms, float("nan"))

    def requested(self, arm: str) -> None:
        self.totals[arm]["requests"] += 1

    def impression(self, arm: str, user_id: str, label: int, score: float) -> None:
        t = self.totals[arm]
        t["impressions"] += 1
        t["clicks"] += label
        t["score"] += float(score)
        t["logloss"] += log_loss_one(label, score)
        self.windows[arm].append(user_key(user_id), label, (score,))

    def forget_user(self, user_id: str) -> int:
        """Drop the user's impressions from every arm's window (an erasure; the running totals hold no user);
        returns how many went."""
        key = user_key(user_id)
        return sum(window.forget(key) for window in self.windows.values())

    def new_user(self, arm: str) -> None:
        self.totals[arm]["users"] += 1

    def refresh(self) -> None:
        self.gauc = {arm: _windowed_gauc(window) for arm, window in self.windows.items()}

    def srm(self) -> dict:
        """The sample-ratio check of this worker's users per arm: ``p_value`` is always valid (read at every
        scrape; :func:`~stream_ctr.experiments.sequential.srm_p_value`), ``chi2`` and ``p_value_fixed`` the
        fixed-horizon chi-square (valid at one planned reading)."""
        users = {arm: int(t["users"]) for arm, t in self.totals.items()}
        fixed, p = srm_test(users, self.experiment.weights), srm_p_value(users, self.experiment.weights)
        return {"chi2": float(fixed.chi2), "p_value_fixed": float(fixed.p_value), "p_value": p, "alarm": p < SRM_ALPHA}

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
        }


def _windowed_gauc(window: ScoreRows) -> float:
    users, labels, scores = window.view()
    return gauc(users, labels, scores["score"])


def _finite(x: float) -> float | None:
    return None if x != x else x
