"""Thompson-sampling allocation: an option beside the fixed split, whose weights follow the arms' clicks.

Each arm's CTR gets a Beta posterior, ``Beta(a0 + clicks, b0 + impressions - clicks)`` from a ``Beta(a0, b0)``
prior. At the start of every allocation epoch (a fixed cadence, ``cadence_s`` seconds from ``start_ts``) the
weights become the posterior probability that each arm has the highest CTR (Thompson sampling's allocation, as a
batch: Chapelle & Li, "An Empirical Evaluation of Thompson Sampling", NeurIPS 2011), estimated from ``draws``
posterior samples with a generator seeded by the salt and the epoch, so every process holding the same counts
computes the same weights. Each arm keeps at least ``floor`` of the weight: the propensities stay bounded away
from 0, which off-policy estimates (:mod:`.ope`) need, and an arm that looks bad early can still recover.

Within an epoch the allocation is an ordinary :class:`~stream_ctr.experiments.assignment.Experiment` whose salt
is ``{salt}/epoch-{n}``: assignment stays a pure hash of salt, epoch and user id, so a user is sticky within an
epoch, on every worker and after every restart, and is reshuffled at an epoch boundary (a new salt is a new split,
which :func:`~stream_ctr.experiments.assignment.check_transition` allows). Every exposure's ``propensity`` is
that epoch's :meth:`~stream_ctr.experiments.assignment.Experiment.propensity` of the served arm, coverage
included; the coverage hash takes the epoch's salt too, so who is covered also changes per epoch.

In the service, an experiment file with a ``bandit`` block (:mod:`.bandit_config`) makes such a run: the
allocator (``stream-ctr ab bandit``, :mod:`.allocator`) computes each epoch's weights with
:meth:`ThompsonAllocation.next_definition` from the counts on the topics and publishes the epoch's definition
on ``ctr.experiments``, which every worker follows.

>>> alloc = ThompsonAllocation("tl", "s1", ("global", "ft", "ft_lc"), cadence_s=3600.0, start_ts=0.0)
>>> alloc.epoch(7199.0)
1
>>> w = alloc.weights(1, clicks={"global": 30, "ft": 60, "ft_lc": 31}, impressions={a: 300 for a in alloc.arms})
>>> max(w, key=w.get), w["global"] >= alloc.floor
('ft', True)
>>> alloc.experiment(1, w).split_salt
's1/epoch-1'
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from stream_ctr.experiments.assignment import BUCKETS, Arm, Experiment, ExperimentError
from stream_ctr.experiments.bandit_config import BanditConfig

__all__ = ["ThompsonAllocation", "probability_best"]


def probability_best(
    clicks: np.ndarray, impressions: np.ndarray, prior: tuple[float, float], draws: int, seed: int
) -> np.ndarray:
    """Monte Carlo estimate of ``P(arm i has the highest CTR)`` under independent Beta posteriors (ties, which
    have probability 0, go to the first arm).

    >>> p = probability_best(np.array([50, 50]), np.array([100, 100]), (1, 1), 20_000, seed=0)
    >>> bool(abs(p[0] - 0.5) < 0.02), float(p.sum())
    (True, 1.0)
    """
    clicks, impressions = np.asarray(clicks, dtype=float), np.asarray(impressions, dtype=float)
    if (clicks < 0).any() or (clicks > impressions).any():
        raise ValueError(f"need 0 <= clicks <= impressions, got {clicks.tolist()} of {impressions.tolist()}")
    rng = np.random.default_rng(seed)
    samples = rng.beta(prior[0] + clicks, prior[1] + impressions - clicks, size=(draws, len(clicks)))
    return np.bincount(samples.argmax(axis=1), minlength=len(clicks)) / draws


def _floored(p: np.ndarray, floor: float) -> np.ndarray:
    """``p`` with every entry raised to at least ``floor``, the excess taken from the others in proportion to
    what they hold above it; then rounded to whole hash buckets (each arm at least one)."""
    w = np.maximum(p, floor)
    above = np.maximum(p - floor, 0.0)
    excess = w.sum() - 1.0
    if excess > 0 and above.sum() > 0:
        w = w - excess * above / above.sum()
    buckets = np.maximum(np.round(w / w.sum() * BUCKETS), 1)
    buckets[np.argmax(buckets)] += BUCKETS - buckets.sum()
    return buckets / BUCKETS


@dataclass(frozen=True)
class ThompsonAllocation:
    """A bandit experiment: ``arms``, epochs of ``cadence_s`` seconds from ``start_ts``, each arm at least
    ``floor`` of the weight, a ``Beta(prior)`` prior per arm, ``coverage`` as in :class:`Experiment`."""

    name: str
    salt: str
    arms: tuple[str, ...]
    cadence_s: float
    start_ts: float
    coverage: float = 1.0
    floor: float = 0.05
    prior: tuple[float, float] = (1.0, 1.0)
    draws: int = 10_000

    def __post_init__(self) -> None:
        if len(self.arms) < 2 or len(set(self.arms)) != len(self.arms):
            raise ExperimentError(f"bandit.arms: need two or more distinct arms, got {list(self.arms)}")
        if not (math.isfinite(self.cadence_s) and self.cadence_s > 0):
            raise ExperimentError(f"bandit.cadence_s: must be > 0 seconds, got {self.cadence_s!r}")
        if not 0 < self.floor * len(self.arms) <= 1:
            raise ExperimentError(f"bandit.floor: must be in (0, 1/arms], got {self.floor!r}")
        if min(self.prior) <= 0 or self.draws < 1:
            raise ExperimentError(f"bandit.prior and draws: must be > 0, got {self.prior!r}, {self.draws!r}")
        self.experiment(0, dict.fromkeys(self.arms, 1.0))  # arm names and coverage checked as an Experiment's

    def epoch(self, ts: float) -> int:
        """The allocation epoch of time ``ts`` (epoch seconds); 0 before ``start_ts``."""
        return max(0, math.floor((ts - self.start_ts) / self.cadence_s))

    def _seed(self, epoch: int) -> int:
        digest = hashlib.blake2b(f"{self.name}:{self.salt}:{epoch}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big")

    def weights(self, epoch: int, clicks: Mapping[str, float], impressions: Mapping[str, float]) -> dict[str, float]:
        """Epoch ``epoch``'s weights from the clicks and impressions per arm counted before it started (arms
        missing from the counts have none); epoch 0, with no counts, is the equal split."""
        c = np.array([clicks.get(a, 0) for a in self.arms], dtype=float)
        n = np.array([impressions.get(a, 0) for a in self.arms], dtype=float)
        if not n.any():
            return self.experiment(epoch, dict.fromkeys(self.arms, 1.0)).weights
        p = probability_best(c, n, self.prior, self.draws, self._seed(epoch))
        return dict(zip(self.arms, _floored(p, self.floor).tolist()))

    @property
    def config(self) -> BanditConfig:
        """The ``bandit`` block of this allocation's definitions (at epoch 0)."""
        return BanditConfig(self.cadence_s, self.floor, self.prior, self.start_ts)

    def experiment(self, epoch: int, weights: Mapping[str, float]) -> Experiment:
        """The split that serves epoch ``epoch`` (salt ``{salt}/epoch-{epoch}``): its :meth:`Experiment.assign` and
        :meth:`Experiment.propensity` are the ones to serve and log with."""
        arms = tuple(Arm(a, float(weights[a])) for a in self.arms)
        return Experiment(self.name, self.salt, arms, self.coverage, bandit=self.config.at(epoch))

    def boundary(self, epoch: int) -> float:
        """When epoch ``epoch`` starts (epoch seconds)."""
        return self.start_ts + epoch * self.cadence_s

    @classmethod
    def of(cls, experiment: Experiment, draws: int = 10_000) -> ThompsonAllocation:
        """The allocation of a bandit experiment whose start is known (registered on ``ctr.experiments``)."""
        b = experiment.bandit
        if b is None or b.start_ts is None:
            raise ExperimentError(f"experiment.bandit: {experiment.name!r} is not a registered bandit experiment")
        arms = tuple(a.name for a in experiment.arms)
        return cls(experiment.name, experiment.salt, arms, b.cadence_s, b.start_ts, experiment.coverage, b.floor,
                   b.prior, draws)  # fmt: skip

    def next_definition(
        self, current: Experiment, epoch: int, clicks: Mapping[str, float], impressions: Mapping[str, float]
    ) -> Experiment:
        """The definition of epoch ``epoch`` that follows ``current`` (a definition of this run): the weights of
        :meth:`weights`, every other part of ``current`` (coverage, guardrails, planned users) kept, and its
        stopped arms still stopped (a guardrail's stop outlives the epoch; ``ab resume`` lifts it).

        >>> from stream_ctr.experiments.assignment import Stop
        >>> alloc = ThompsonAllocation("b", "s", ("global", "ft"), cadence_s=60.0, start_ts=0.0)
        >>> cur = alloc.experiment(0, {"global": 1, "ft": 1})
        >>> cur = cur.stopping("ft", Stop(1.0, "harms ctr", "test", "2026-01-01T00:00:00Z"))
        >>> nxt = alloc.next_definition(cur, 2, {"global": 10, "ft": 30}, {"global": 100, "ft": 100})
        >>> nxt.epoch, nxt.weights, sorted(nxt.stopped)
        (2, {'global': 0.05, 'ft': 0.95}, ['ft'])
        """
        weights = self.weights(epoch, clicks, impressions)
        arms = tuple(Arm(a.name, weights[a.name]) for a in current.arms)
        assert current.bandit is not None, "a bandit run's definition"
        new = dataclasses.replace(current, arms=arms, bandit=current.bandit.at(epoch, self.start_ts))
        for arm, stop in current.stopped.items():
            new = new.stopping(arm, stop)
        return new
