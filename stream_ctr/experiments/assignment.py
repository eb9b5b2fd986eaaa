"""An online A/B experiment: its definition, its validation and the deterministic assignment of users to arms.

Assignment is a pure function of ``(salt, user_id)``: every worker, every restart and every replay puts a user in
the same arm, with no table to share. Two independent hashes of the user id do the work:

- the *coverage* hash decides whether the user is in the experiment at all (``bucket < coverage * 10000``);
- the *arm* hash picks the arm by cumulative weight ranges over the same 10,000 buckets.

Because the two are independent, ramping coverage up only adds users; nobody already in moves to another arm.
Changing the weights of a running experiment *would* move users between arms, and the users moved would carry
their history into a new arm, so :func:`check_transition` refuses it unless the salt changes (a new salt is a new
experiment: everybody is reshuffled and the analysis starts afresh). Users outside coverage get the control arm
and are not analysed.

An arm can be *stopped* (by a guardrail, :mod:`.guardrails`, or by hand): its serving weight becomes 0 and a
:class:`Stop` records who stopped it, when, why and the weight it had. The arm keeps its bucket range, so no other
user moves: the stopped arm's users are served the control arm and leave the analysis (like users outside
coverage); everyone else keeps their arm. Publishing the arm's weight again (:meth:`Experiment.resuming`) brings
exactly those users back to it.

A *bandit* experiment (a ``bandit`` block, :class:`~stream_ctr.experiments.bandit_config.BanditConfig`) is a
sequence of allocation epochs under one name and salt: epoch ``n`` hashes users with the salt ``{salt}/epoch-{n}``
(:attr:`Experiment.split_salt`), so users are sticky within an epoch and reshuffled at its end, and each epoch has
its own weights (:mod:`.bandit`). :func:`check_transition` lets a run move to a later epoch, never back.

>>> exp = Experiment.default()
>>> [a.name for a in exp.arms], exp.coverage
(['global', 'ft', 'ft_lc'], 1.0)
>>> exp.allocation
(('global', 0, 3333), ('ft', 3333, 6667), ('ft_lc', 6667, 10000))
>>> exp.assign("42") == exp.assign("42")
True
>>> Experiment.from_dict({"name": "x", "salt": "s", "arms": [{"name": "ft", "weight": 0}]})
Traceback (most recent call last):
...
stream_ctr.experiments.assignment.ExperimentError: experiment.arms[0].weight: must be > 0, got 0
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream_ctr.contracts.arms import ARMS, CONTROL
from stream_ctr.experiments.bandit_config import BanditConfig, BanditError
from stream_ctr.experiments.guardrails import GuardrailError, Guardrails
from stream_ctr.experiments.sequential import PLANNED_USERS

__all__ = [
    "BUCKETS",
    "Arm",
    "Assignment",
    "Experiment",
    "ExperimentError",
    "Stop",
    "bucket",
    "check_transition",
    "later_epoch",
]

#: Hash buckets a user can fall in; coverage and weights have a resolution of 1 / BUCKETS.
BUCKETS = 10_000

_TOP_KEYS = {
    "name": str,
    "salt": str,
    "arms": list,
    "coverage": float,
    "guardrails": dict,
    "planned_users": int,
    "bandit": dict,
}
_ARM_KEYS = {"name": str, "weight": float, "stopped": dict}
_STOP_KEYS = {"weight": float, "reason": str, "by": str, "at": str, "guardrail": str}


class ExperimentError(ValueError):
    """An experiment definition is malformed or an illegal change; the message starts with the offending key."""


def bucket(salt: str, purpose: str, user_id: str) -> int:
    """The user's bucket in ``[0, BUCKETS)`` for one purpose: blake2b of ``salt:purpose:user_id``, stable across
    processes and machines (unlike :func:`hash`).

    >>> bucket("v1", "arm", "42") == bucket("v1", "arm", "42"), 0 <= bucket("v1", "arm", "42") < BUCKETS
    (True, True)
    """
    digest = hashlib.blake2b(f"{salt}:{purpose}:{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def _check_arm(name: Any, weight: Any, key: str, stopped: bool = False) -> None:
    if not isinstance(name, str) or name not in ARMS:
        raise ExperimentError(f"{key}.name: must be one of {list(ARMS)}, got {name!r}")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise ExperimentError(f"{key}.weight: expected a number, got {weight!r}")
    if stopped and weight != 0:
        raise ExperimentError(f"{key}.weight: a stopped arm has weight 0 (the former is in 'stopped'), got {weight}")
    if not stopped and (not math.isfinite(weight) or weight <= 0):
        raise ExperimentError(f"{key}.weight: must be > 0, got {weight!r}")


@dataclass(frozen=True)
class Stop:
    """Why an arm was stopped: its weight before (the bucket share it keeps), the reason, who or what stopped it
    (``by``), when (``at``, ISO 8601 UTC) and the guardrail metric that did (empty for a stop by hand)."""

    weight: float
    reason: str
    by: str
    at: str
    guardrail: str = ""

    def __post_init__(self) -> None:
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
            raise ExperimentError(f"stopped.weight: must be > 0 (the arm's weight before the stop), got {w!r}")
        for key in ("reason", "by", "at"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key).strip():
                raise ExperimentError(f"stopped.{key}: must be a non-empty string, got {getattr(self, key)!r}")

    @classmethod
    def from_dict(cls, d: Any, key: str) -> Stop:
        _check_keys(d, key, _STOP_KEYS, optional=("guardrail",))
        try:
            return cls(float(d["weight"]), d["reason"], d["by"], d["at"], d.get("guardrail", ""))
        except ExperimentError as exc:
            raise ExperimentError(f"{key}.{str(exc).removeprefix('stopped.')}") from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"weight": self.weight, "reason": self.reason, "by": self.by, "at": self.at}
        return out | ({"guardrail": self.guardrail} if self.guardrail else {})


@dataclass(frozen=True)
class Arm:
    """One arm of an experiment; ``weight`` is relative (normalised by the sum over the experiment's arms), 0 for
    an arm ``stopped`` (whose :class:`Stop` keeps the weight that sizes its bucket range)."""

    name: str
    weight: float
    stopped: Stop | None = None

    def __post_init__(self) -> None:
        _check_arm(self.name, self.weight, "arm", self.stopped is not None)

    @property
    def allocated(self) -> float:
        """The weight that sizes the arm's bucket range: stopping an arm does not change it."""
        return self.stopped.weight if self.stopped is not None else self.weight


@dataclass(frozen=True)
class Assignment:
    """Where a user goes: ``arm`` to serve, whether they count in the analysis, and their arm bucket (which is
    the same whether or not they are covered)."""

    arm: str
    in_experiment: bool
    bucket: int


@dataclass(frozen=True)
class Experiment:
    """A named, salted split of users over arms, of which ``coverage`` (in (0, 1]) take part; optionally
    ``guardrails`` the worker enforces and ``planned_users``, where its always-valid intervals are tightest."""

    name: str
    salt: str
    arms: tuple[Arm, ...]
    coverage: float = 1.0
    guardrails: Guardrails | None = None
    planned_users: int = PLANNED_USERS
    bandit: BanditConfig | None = None
    #: ``(arm, first bucket, end bucket)`` per arm, derived from the weights.
    allocation: tuple[tuple[str, int, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "arms", tuple(self.arms))
        self._validate()
        object.__setattr__(self, "allocation", self._allocate())

    def _validate(self) -> None:
        for key in ("name", "salt"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip():
                raise ExperimentError(f"experiment.{key}: must be a non-empty string, got {value!r}")
        if not self.arms:
            raise ExperimentError("experiment.arms: must name at least one arm")
        seen: set[str] = set()
        for i, arm in enumerate(self.arms):
            if not isinstance(arm, Arm):
                raise ExperimentError(f"experiment.arms[{i}]: expected an Arm, got {arm!r}")
            if arm.name in seen:
                raise ExperimentError(f"experiment.arms[{i}].name: duplicate arm {arm.name!r}")
            seen.add(arm.name)
        c = self.coverage
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 < c <= 1:
            raise ExperimentError(f"experiment.coverage: must be a number in (0, 1], got {c!r}")
        if any(arm.stopped is not None and arm.name == CONTROL for arm in self.arms):
            raise ExperimentError(f"experiment.arms: the control arm {CONTROL!r} cannot be stopped")
        n = self.planned_users
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ExperimentError(f"experiment.planned_users: must be an integer >= 2, got {n!r}")
        if self.bandit is not None:
            self._validate_bandit(self.bandit)

    def _validate_bandit(self, bandit: BanditConfig) -> None:
        if not isinstance(bandit, BanditConfig):
            raise ExperimentError(f"experiment.bandit: expected a BanditConfig, got {bandit!r}")
        if len(self.arms) < 2:
            raise ExperimentError("experiment.arms: a bandit needs two or more arms")
        if bandit.floor * len(self.arms) > 1:
            raise ExperimentError(
                f"experiment.bandit.floor: must be at most 1 / arms = {1 / len(self.arms):.4g}, got {bandit.floor!r}"
            )

    def _allocate(self) -> tuple[tuple[str, int, int], ...]:
        total = sum(arm.allocated for arm in self.arms)
        out, cumulative, lo = [], 0.0, 0
        for i, arm in enumerate(self.arms):
            cumulative += arm.allocated
            hi = BUCKETS if i == len(self.arms) - 1 else round(cumulative / total * BUCKETS)
            if hi <= lo:
                raise ExperimentError(f"experiment.arms[{i}].weight: too small to get one of {BUCKETS} buckets")
            out.append((arm.name, lo, hi))
            lo = hi
        return tuple(out)

    @property
    def weights(self) -> dict[str, float]:
        """Normalised weights per arm (they sum to 1), e.g. for :func:`stream_ctr.experiments.stats.srm_test`;
        a stopped arm counts with the weight it had (its bucket share)."""
        total = sum(arm.allocated for arm in self.arms)
        return {arm.name: arm.allocated / total for arm in self.arms}

    @property
    def live_weights(self) -> dict[str, float]:
        """Normalised weights of the arms not stopped: the split of the users still analysed."""
        live = {name: w for name, w in self.weights.items() if name not in self.stopped}
        total = sum(live.values())
        return {name: w / total for name, w in live.items()}

    @property
    def stopped(self) -> dict[str, Stop]:
        """The stopped arms and why."""
        return {arm.name: arm.stopped for arm in self.arms if arm.stopped is not None}

    def stopping(self, arm: str, stop: Stop) -> Experiment:
        """This experiment with ``arm`` stopped (weight 0, ``stop`` recorded); its bucket range is kept.

        >>> exp = Experiment.default()
        >>> stopped = exp.stopping("ft", Stop(1.0, "harms ctr", "test", "2026-01-01T00:00:00Z"))
        >>> stopped.allocation == exp.allocation, stopped.propensity("ft"), round(stopped.propensity("global"), 4)
        (True, 0.0, 0.6667)
        >>> sum(exp.assign(str(u)).arm == "ft" for u in range(300)) > 0
        True
        >>> moved = [u for u in range(300) if exp.assign(str(u)) != stopped.assign(str(u))]
        >>> {exp.assign(str(u)).arm for u in moved}, {stopped.assign(str(u)).arm for u in moved}
        ({'ft'}, {'global'})
        >>> stopped.resuming("ft") == exp
        True
        """
        names = [a.name for a in self.arms]
        if arm not in names:
            raise ExperimentError(f"experiment.arms: no arm {arm!r} to stop (arms: {names})")
        current = self.arms[names.index(arm)]
        if current.stopped is not None:
            return self
        if stop.weight != current.weight:
            stop = Stop(current.weight, stop.reason, stop.by, stop.at, stop.guardrail)
        arms = tuple(Arm(a.name, 0.0, stop) if a.name == arm else a for a in self.arms)
        return dataclasses.replace(self, arms=arms)

    def resuming(self, arm: str) -> Experiment:
        """This experiment with ``arm`` serving again at the weight it had before its stop."""
        arms = tuple(Arm(a.name, a.allocated) if a.name == arm and a.stopped is not None else a for a in self.arms)
        if arms == self.arms:
            raise ExperimentError(f"experiment.arms: arm {arm!r} is not stopped (stopped: {sorted(self.stopped)})")
        return dataclasses.replace(self, arms=arms)

    @property
    def epoch(self) -> int:
        """The allocation epoch this definition serves (0 for a fixed split)."""
        return 0 if self.bandit is None else self.bandit.epoch

    @property
    def split_salt(self) -> str:
        """The salt users are hashed with: ``salt``, or ``{salt}/epoch-{n}`` for epoch ``n`` of a bandit.

        >>> Experiment.from_dict({"name": "b", "salt": "s", "arms": [{"name": "global", "weight": 1},
        ...     {"name": "ft", "weight": 1}], "bandit": {"cadence_s": 60, "epoch": 2}}).split_salt
        's/epoch-2'
        """
        return self.salt if self.bandit is None else f"{self.salt}/epoch-{self.bandit.epoch}"

    def continuing(self, previous: Experiment | None) -> Experiment:
        """What a worker starting with this (configured) experiment runs, given ``previous``, the definition on
        ``ctr.experiments``: this experiment with the stops of ``previous`` (:meth:`keeping_stops_of`); for a
        bandit run, with the run's registered start, and when ``previous`` is a later epoch (:func:`later_epoch`),
        with that epoch's weights and stops (coverage, guardrails and planned users stay this file's)."""
        if previous is None or not later_epoch(self, previous, or_same=True):
            return self.keeping_stops_of(previous)
        if previous.epoch > self.epoch:
            return dataclasses.replace(self, arms=previous.arms, bandit=previous.bandit)
        return dataclasses.replace(self.keeping_stops_of(previous), bandit=previous.bandit)

    def keeping_stops_of(self, previous: Experiment | None) -> Experiment:
        """This (configured) experiment with the stops of ``previous``, when that is the same run (name, salt,
        epoch and bucket ranges): a restart with the original file does not undo a guardrail's stop."""
        if previous is None or (previous.name, previous.split_salt, previous.allocation) != (
            self.name,
            self.split_salt,
            self.allocation,
        ):
            return self
        out = self
        for arm, stop in previous.stopped.items():
            if arm not in out.stopped:
                out = out.stopping(arm, stop)
        return out

    def propensity(self, arm: str) -> float:
        """The probability that the assignment gives a user ``arm`` (coverage included): the logging propensity
        an off-policy estimate weighs the arm's exposures by.

        >>> exp = Experiment("e", "s", (Arm("global", 1.0), Arm("ft", 3.0)), coverage=0.5)
        >>> exp.propensity("ft"), exp.propensity("global"), exp.propensity("other")
        (0.375, 0.625, 0.0)
        """
        covered = round(self.coverage * BUCKETS) / BUCKETS
        stopped = self.stopped
        served = {name: CONTROL if name in stopped else name for name, _, _ in self.allocation}
        width = sum(hi - lo for name, lo, hi in self.allocation if served[name] == arm) / BUCKETS
        return covered * width + (1 - covered if arm == CONTROL else 0.0)

    @property
    def key(self) -> int:
        """A non-zero 32-bit id of this experiment run (name and salt, the epoch's for a bandit): what a user's
        state remembers to be counted once per experiment (per epoch)."""
        digest = hashlib.blake2b(f"{self.name}:{self.split_salt}".encode(), digest_size=4).digest()
        return int.from_bytes(digest, "big") or 1

    def assign(self, user_id: str) -> Assignment:
        """The user's arm; users outside coverage get :data:`~stream_ctr.contracts.arms.CONTROL` and are not
        analysed."""
        salt = self.split_salt
        arm_bucket = bucket(salt, "arm", user_id)
        if bucket(salt, "coverage", user_id) >= round(self.coverage * BUCKETS):
            return Assignment(CONTROL, False, arm_bucket)
        arm = next(name for name, lo, hi in self.allocation if lo <= arm_bucket < hi)
        if arm in self.stopped:  # a stopped arm's users get the control arm and leave the analysis
            return Assignment(CONTROL, False, arm_bucket)
        return Assignment(arm, True, arm_bucket)

    @classmethod
    def configured(cls, path: str | Path | None) -> Experiment:
        """The experiment in the file at ``path`` (``STREAM_CTR_EXPERIMENT``), or :meth:`default` without one."""
        return cls.load(path) if path else cls.default()

    @classmethod
    def default(cls) -> Experiment:
        """What the service runs without an experiment file: every arm, equal weights, every user."""
        return cls("label-correction", "v1", tuple(Arm(name, 1.0) for name in ARMS), 1.0)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Experiment:
        """Parse the JSON shape of :meth:`to_dict`; ``coverage`` (1.0), ``guardrails`` (none), ``planned_users``
        and ``bandit`` (none: a fixed split) may be left out."""
        _check_keys(d, "experiment", _TOP_KEYS, optional=("coverage", "guardrails", "planned_users", "bandit"))
        arms = []
        for i, raw in enumerate(d["arms"]):
            key = f"experiment.arms[{i}]"
            _check_keys(raw, key, _ARM_KEYS, optional=("stopped",))
            stop = Stop.from_dict(raw["stopped"], f"{key}.stopped") if "stopped" in raw else None
            _check_arm(raw["name"], raw["weight"], key, stop is not None)
            arms.append(Arm(raw["name"], float(raw["weight"]), stop))
        try:
            guardrails = Guardrails.from_dict(d["guardrails"], "experiment.guardrails") if "guardrails" in d else None
            bandit = BanditConfig.from_dict(d["bandit"], "experiment.bandit") if "bandit" in d else None
        except (GuardrailError, BanditError) as exc:
            raise ExperimentError(str(exc)) from None
        planned = d.get("planned_users", PLANNED_USERS)
        return cls(d["name"], d["salt"], tuple(arms), float(d.get("coverage", 1.0)), guardrails, planned, bandit)

    def to_dict(self) -> dict[str, Any]:
        arms = [
            {"name": arm.name, "weight": arm.weight} | ({"stopped": arm.stopped.to_dict()} if arm.stopped else {})
            for arm in self.arms
        ]
        out: dict[str, Any] = {"name": self.name, "salt": self.salt, "arms": arms, "coverage": self.coverage}
        if self.guardrails is not None:
            out["guardrails"] = self.guardrails.to_dict()
        if self.planned_users != PLANNED_USERS:
            out["planned_users"] = self.planned_users
        if self.bandit is not None:
            out["bandit"] = self.bandit.to_dict()
        return out

    @classmethod
    def load(cls, path: str | Path) -> Experiment:
        """Read a JSON experiment file; every problem is an :class:`ExperimentError` naming the file and key."""
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ExperimentError(f"{path}: cannot read experiment file ({exc.strerror or exc})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ExperimentError(f"{path}: not valid JSON ({exc})") from None
        try:
            return cls.from_dict(d)
        except ExperimentError as exc:
            raise ExperimentError(f"{path}: {exc}") from None


def _check_keys(d: Any, key: str, types: Mapping[str, type], optional: tuple[str, ...] = ()) -> None:
    """``d`` is an object with exactly the keys of ``types`` (less any ``optional`` left out), each of its type;
    an int passes for a float, a bool passes for nothing else."""
    if not isinstance(d, Mapping):
        raise ExperimentError(f"{key}: expected an object, got {type(d).__name__}")
    for name in d:
        if name not in types:
            raise ExperimentError(f"{key}.{name}: unknown key (expected {sorted(types)})")
    for name, kind in types.items():
        if name not in d:
            if name in optional:
                continue
            raise ExperimentError(f"{key}.{name}: missing")
        value = d[name]
        accepted = (int, float) if kind is float else kind
        if isinstance(value, bool) or not isinstance(value, accepted):
            raise ExperimentError(f"{key}.{name}: expected {kind.__name__}, got {value!r}")


def _describe(exp: Experiment) -> str:
    return " ".join(f"{name}={weight:.4g}" for name, weight in exp.weights.items())


def later_epoch(previous: Experiment, new: Experiment, or_same: bool = False) -> bool:
    """Whether ``new`` is a later epoch (or, with ``or_same``, the same one) of the bandit run ``previous``: the
    same name, salt, arms and allocator (:meth:`~.bandit_config.BanditConfig.same_allocator`).

    >>> exp = Experiment.from_dict({"name": "b", "salt": "s", "bandit": {"cadence_s": 60},
    ...     "arms": [{"name": "global", "weight": 1}, {"name": "ft", "weight": 1}]})
    >>> nxt = dataclasses.replace(exp, arms=(Arm("global", 1), Arm("ft", 3)), bandit=exp.bandit.at(1))
    >>> later_epoch(exp, nxt), later_epoch(nxt, exp), later_epoch(exp, exp), later_epoch(exp, exp, or_same=True)
    (True, False, False, True)
    """
    a, b = previous.bandit, new.bandit
    if a is None or b is None or (previous.name, previous.salt) != (new.name, new.salt):
        return False
    if [arm.name for arm in previous.arms] != [arm.name for arm in new.arms] or not a.same_allocator(b):
        return False
    return b.epoch > a.epoch or (or_same and b.epoch == a.epoch)


def check_transition(previous: Experiment | None, new: Experiment) -> None:
    """Refuse a change that would move users of a running experiment between arms.

    The same name and salt is the same running experiment: its arms must keep their bucket ranges (so the
    weights, their order and the arm set stay; proportional rescaling is harmless). Coverage may ramp. Stopping
    an arm (:meth:`Experiment.stopping`: weight 0, its range kept) and resuming it are legal: they move only that
    arm's users, to the control arm and back. Guardrails and planned users may change. A new salt, or a new
    name, starts a new experiment and is always allowed.

    A bandit run (same name and salt, a ``bandit`` block) may move to a later epoch (:func:`later_epoch`) with any
    weights: the epoch's own salt reshuffles everybody. Within an epoch the rules above hold. Going back to an
    earlier epoch, changing the arms, the cadence, floor, prior or start, or turning a fixed split into a bandit
    (or back) needs a new salt.

    >>> old = Experiment.default()
    >>> check_transition(old, Experiment(old.name, old.salt, old.arms, coverage=0.5))
    >>> check_transition(old, Experiment(old.name, old.salt, old.arms[:2]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stream_ctr.experiments.assignment.ExperimentError: experiment.arms: weights of running experiment ... new salt
    """
    if previous is None or previous.name != new.name or previous.salt != new.salt:
        return
    if previous.bandit is not None or new.bandit is not None:
        _check_epochs(previous, new)
    if previous.epoch != new.epoch:
        return
    if previous.allocation != new.allocation:
        raise ExperimentError(
            f"experiment.arms: weights of running experiment {new.name!r} changed "
            f"({_describe(previous)} -> {_describe(new)}); a change of weights needs a new salt"
        )


def _check_epochs(previous: Experiment, new: Experiment) -> None:
    """Refuse a change of a bandit run (same name and salt) other than a later epoch or a change within one."""
    a, b, name = previous.bandit, new.bandit, new.name
    if a is None or b is None:
        was, now = ("a fixed split", "a bandit") if a is None else ("a bandit", "a fixed split")
        raise ExperimentError(f"experiment.bandit: running experiment {name!r} is {was}; {now} needs a new salt")
    if not a.same_allocator(b):
        raise ExperimentError(
            f"experiment.bandit: the allocation of running experiment {name!r} changed "
            f"({a.to_dict()} -> {b.to_dict()}); that needs a new salt"
        )
    if [arm.name for arm in previous.arms] != [arm.name for arm in new.arms]:
        raise ExperimentError(f"experiment.arms: the arms of running bandit {name!r} changed; that needs a new salt")
    if b.epoch < a.epoch:
        raise ExperimentError(
            f"experiment.bandit.epoch: {name!r} runs epoch {a.epoch}; epoch {b.epoch} is over (epochs only advance)"
        )
