"""The offline protocol: every user's events in time order, cut into cloud / fine-tune / test parts.

For a user with ``n`` events (sorted by ``ts``, ties kept in input order)::

    [ cloud: first floor(n * cloud_frac) | fine-tune: the rest | test: last max(1, round(n * test_frac)) ]
                                         [ fit | val          ]

* ``cloud``: the global model trains on the cloud part of *every* user;
* ``fit`` / ``val``: the fine-tune part, whose last ``val_frac`` share (at least one event) is the validation split
  on which step size, step count and L2 are chosen; ``fit`` is what fine-tuning learns from while tuning;
* the final fine-tune learns from the whole fine-tune part (``fit + val``) with the chosen settings;
* ``test``: everything is scored on the user's last part, never seen by tuning.

Users with fewer than ``min_events`` events are not evaluated: their events all go to the cloud part and they are
counted in :attr:`SplitData.skipped_users`.

>>> p = Protocol()
>>> p.sizes(20)
(10, 4, 2, 4)
>>> p.sizes(9) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from stream_ctr.contracts.features import FeatureSpec, HashingEncoder

__all__ = ["CLOUD", "FIT", "VAL", "TEST", "PG", "Protocol", "SplitData", "split_events"]

CLOUD, FIT, VAL, TEST = 0, 1, 2, 3
#: Definitions of the global CTR ``p_g`` that correction aligns a user's prior to (:meth:`SplitData.priors`).
PG = ("cloud", "aligned")


@dataclass(frozen=True)
class Protocol:
    cloud_frac: float = 0.5
    test_frac: float = 0.2
    val_frac: float = 1 / 3
    min_events: int = 10

    def __post_init__(self):
        if not (0 < self.cloud_frac < 1 and 0 < self.test_frac < 1 and self.cloud_frac + self.test_frac < 1):
            raise ValueError("need 0 < cloud_frac, test_frac and cloud_frac + test_frac < 1")
        if not 0 < self.val_frac < 1:
            raise ValueError("need 0 < val_frac < 1")
        if self.min_events < 4:
            raise ValueError("min_events must be at least 4 (one event for each of cloud, fit, val, test)")

    def sizes(self, n: int) -> tuple[int, int, int, int] | None:
        """``(cloud, fit, val, test)`` event counts for a user with ``n`` events; None if the user is skipped."""
        if n < self.min_events:
            return None
        cloud = max(1, int(n * self.cloud_frac))
        test = max(1, int(round(n * self.test_frac)))
        ft = n - cloud - test
        val = max(1, int(round(ft * self.val_frac)))
        fit = ft - val
        if fit < 1:
            return None
        return cloud, fit, val, test


@dataclass
class SplitData:
    """All events encoded once, with the part each one belongs to and per-user index arrays."""

    ids: np.ndarray  # [n, slots] int64
    vals: np.ndarray  # [n, slots] float32
    labels: np.ndarray  # [n] float32, 0/1
    user: np.ndarray  # [n] int user code
    part: np.ndarray  # [n] CLOUD | FIT | VAL | TEST
    user_names: list[str]  # code -> user_id
    evaluated: np.ndarray  # codes of the evaluated users, ascending
    fit: list[np.ndarray]  # per evaluated user (aligned with ``evaluated``): event indexes, time order
    val: list[np.ndarray]
    test: list[np.ndarray]
    skipped_users: int
    spec: FeatureSpec
    ts: np.ndarray | None = None  # [n] event times (None: every p_g is the cloud part's)

    @cached_property
    def _ctr_clock(self) -> tuple[np.ndarray, np.ndarray]:
        """Event times in ascending order and the cumulative clicks up to each: the merged stream's CTR curve."""
        if self.ts is None:
            raise ValueError("the running global CTR needs event times: this split has none (ts is None)")
        order = np.argsort(self.ts, kind="stable")
        return self.ts[order], np.cumsum(self.labels[order], dtype=np.float64)

    def global_ctr_until(self, t: np.ndarray) -> np.ndarray:
        """Click share of *all* events (every user, every part) with a time <= each of ``t``: the running global
        CTR the service's trainer publishes, as of time ``t``. O(log n) per query (a binary search)."""
        times, clicks = self._ctr_clock
        k = np.searchsorted(times, np.asarray(t, dtype=float), side="right")
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(k > 0, clicks[np.maximum(k - 1, 0)] / np.maximum(k, 1), 0.5)

    def priors(self, parts, pg: str = "cloud") -> np.ndarray:
        """``p_g`` for fine-tuning on each of ``parts`` (one index array per user, in time order): ``cloud`` = the
        cloud part's click share for everyone; ``aligned`` = :meth:`global_ctr_until` the part's last event, the
        moment the user's fine-tuning step is taken (the service's definition)."""
        if pg not in PG:
            raise ValueError(f"unknown p_g {pg!r}; choose from {PG}")
        if pg == "cloud" or self.ts is None:
            return np.full(len(parts), self.global_ctr)
        return self.global_ctr_until(np.array([self.ts[p[-1]] for p in parts]))

    @property
    def cloud_idx(self) -> np.ndarray:
        return np.flatnonzero(self.part == CLOUD)

    @property
    def global_ctr(self) -> float:
        """``p_g``: the click share of the cloud training part."""
        idx = self.cloud_idx
        return float(self.labels[idx].mean()) if len(idx) else 0.5

    def ft(self, k: int) -> np.ndarray:
        """The whole fine-tune part (fit then val) of the ``k``-th evaluated user."""
        return np.concatenate([self.fit[k], self.val[k]])

    def subset(self, keep: np.ndarray) -> SplitData:
        """The same data restricted to evaluated users at positions ``keep`` (cloud part unchanged)."""
        keep = np.sort(np.asarray(keep, dtype=int))
        return SplitData(
            self.ids,
            self.vals,
            self.labels,
            self.user,
            self.part,
            self.user_names,
            self.evaluated[keep],
            [self.fit[k] for k in keep],
            [self.val[k] for k in keep],
            [self.test[k] for k in keep],
            self.skipped_users,
            self.spec,
            self.ts,
        )


def split_events(events, spec: FeatureSpec, protocol: Protocol = Protocol()) -> SplitData:
    """Encode ``events`` (``stream_ctr.contracts.events.Event``) and cut each user's history per ``protocol``."""
    if not events:
        raise ValueError("no events to evaluate")
    ids, vals = HashingEncoder(spec).encode_events(events)
    labels = np.array([e.label for e in events], dtype=np.float32)
    ts = np.array([e.ts for e in events], dtype=float)
    names, user = np.unique(np.array([e.user_id for e in events], dtype=object).astype(str), return_inverse=True)
    order = np.lexsort((np.arange(len(events)), ts, user))  # by user, then time, then input order
    bounds = np.flatnonzero(np.r_[True, user[order][1:] != user[order][:-1], True])
    part = np.full(len(events), CLOUD, dtype=np.int8)
    evaluated, fit, val, test = [], [], [], []
    skipped = 0
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        idx = order[lo:hi]
        sizes = protocol.sizes(len(idx))
        if sizes is None:
            skipped += 1
            continue
        c, f, v, _ = sizes
        parts = np.split(idx, [c, c + f, c + f + v])
        for code, p in zip((CLOUD, FIT, VAL, TEST), parts):
            part[p] = code
        evaluated.append(user[idx[0]])
        fit.append(parts[1])
        val.append(parts[2])
        test.append(parts[3])
    if not evaluated:
        raise ValueError(
            f"no user has at least {protocol.min_events} events; nothing to evaluate ({skipped} users skipped)"
        )
    return SplitData(
        ids, vals, labels, user, part, [str(n) for n in names], np.array(evaluated), fit, val, test, skipped, spec, ts
    )
