"""The ``bandit`` block of an experiment definition: Thompson-sampling allocation over epochs (:mod:`.bandit`).

In the experiment file::

    "bandit": {"cadence_s": 3600, "floor": 0.05, "prior": [1, 1]}

``cadence_s`` (required): seconds per allocation epoch; ``floor`` (default 0.05): the least weight any arm keeps
(at most 1 / arms); ``prior`` (default ``[1, 1]``): the ``Beta(a, b)`` prior of every arm's CTR; ``start_ts``
(optional, epoch seconds): when epoch 0 starts (left out, the first worker or allocator to register the run
records the time it did). The definitions that the allocator (``stream-ctr ab bandit``) publishes on
``ctr.experiments`` also carry ``epoch``, the allocation epoch they serve (0, the file's own weights, when left out).

>>> b = BanditConfig.from_dict({"cadence_s": 60, "prior": [2, 8]}, "experiment.bandit")
>>> b.cadence_s, b.floor, b.prior, b.epoch, b.start_ts
(60.0, 0.05, (2.0, 8.0), 0, None)
>>> BanditConfig.from_dict({"cadence_s": 60, "prior": [1]}, "experiment.bandit")
Traceback (most recent call last):
...
stream_ctr.experiments.bandit_config.BanditError: experiment.bandit.prior: expected [a, b], two numbers > 0, got [1]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BanditConfig", "BanditError"]

_KEYS = ("cadence_s", "floor", "prior", "start_ts", "epoch")


class BanditError(ValueError):
    """A malformed ``bandit`` block; the message starts with the offending key."""


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


@dataclass(frozen=True)
class BanditConfig:
    """How a bandit experiment allocates (``cadence_s``, ``floor``, ``prior``), when it started (``start_ts``,
    None until registered) and the epoch a definition serves."""

    cadence_s: float
    floor: float = 0.05
    prior: tuple[float, float] = (1.0, 1.0)
    start_ts: float | None = None
    epoch: int = 0

    def __post_init__(self) -> None:
        self.check("bandit")

    def check(self, key: str) -> None:
        """Raise :class:`BanditError` naming ``key``'s offending entry (the floor is checked against the arms by
        the experiment)."""
        if not _number(self.cadence_s) or self.cadence_s <= 0:
            raise BanditError(f"{key}.cadence_s: must be a number of seconds > 0, got {self.cadence_s!r}")
        if not _number(self.floor) or not 0 < self.floor < 1:
            raise BanditError(f"{key}.floor: must be a number in (0, 1 / arms], got {self.floor!r}")
        prior = self.prior
        if not isinstance(prior, (tuple, list)) or len(prior) != 2 or not all(_number(p) and p > 0 for p in prior):
            raise BanditError(f"{key}.prior: expected [a, b], two numbers > 0, got {list(prior)!r}")
        if self.start_ts is not None and (not _number(self.start_ts) or self.start_ts < 0):
            raise BanditError(f"{key}.start_ts: must be epoch seconds >= 0, got {self.start_ts!r}")
        if isinstance(self.epoch, bool) or not isinstance(self.epoch, int) or self.epoch < 0:
            raise BanditError(f"{key}.epoch: must be an integer >= 0, got {self.epoch!r}")

    def same_allocator(self, other: BanditConfig) -> bool:
        """Whether ``other`` allocates the same way (cadence, floor, prior and, where both know it, the start):
        then its definitions may be epochs of the same run."""
        starts = {self.start_ts, other.start_ts} - {None}
        return (self.cadence_s, self.floor, self.prior) == (other.cadence_s, other.floor, other.prior) and len(
            starts
        ) <= 1

    def at(self, epoch: int, start_ts: float | None = None) -> BanditConfig:
        """This block for ``epoch`` (and ``start_ts``, when given)."""
        return dataclasses.replace(self, epoch=epoch, start_ts=self.start_ts if start_ts is None else start_ts)

    @classmethod
    def from_dict(cls, d: Any, key: str) -> BanditConfig:
        """Parse the JSON block at ``key`` (e.g. ``experiment.bandit``)."""
        if not isinstance(d, Mapping):
            raise BanditError(f"{key}: expected an object, got {type(d).__name__}")
        for name in d:
            if name not in _KEYS:
                raise BanditError(f"{key}.{name}: unknown key (expected {sorted(_KEYS)})")
        if "cadence_s" not in d:
            raise BanditError(f"{key}.cadence_s: missing")
        prior = d.get("prior", [1.0, 1.0])
        if not isinstance(prior, list) or len(prior) != 2 or not all(_number(p) for p in prior):
            raise BanditError(f"{key}.prior: expected [a, b], two numbers > 0, got {prior!r}")
        for name in ("cadence_s", "floor", "start_ts"):
            if name in d and not _number(d[name]):
                raise BanditError(f"{key}.{name}: expected a number, got {d[name]!r}")
        start = d.get("start_ts")
        try:
            return cls(
                float(d["cadence_s"]),
                float(d.get("floor", 0.05)),
                (float(prior[0]), float(prior[1])),
                None if start is None else float(start),
                d.get("epoch", 0),
            )
        except BanditError as exc:
            raise BanditError(f"{key}.{str(exc).removeprefix('bandit.')}") from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cadence_s": self.cadence_s, "floor": self.floor, "prior": list(self.prior)}
        return out | ({"start_ts": self.start_ts} if self.start_ts is not None else {}) | {"epoch": self.epoch}
