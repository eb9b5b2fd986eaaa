"""A click generator with known per-user preferences and per-user CTR priors.

Each user has a preference vector ``u`` and a prior logit ``b``; each item a vector ``v`` and a category::

    P(click | user, item) = sigmoid(b_user + taste * u . v_item)

``drift`` is the spread (std) of the prior logits: 0 gives every user the same CTR, 2 gives heavy clickers
near 0.8 and browsers near 0.05, the regime where naive fine-tuning learns the prior instead of the taste.

An injected :class:`Change` (for the drift detectors' tests) moves the world at a point of the stream's time:
``jump`` adds ``size`` to every prior logit from fraction ``at`` of the time span on, ``ramp`` adds it linearly
over the next ``over`` of the span, and ``flip`` reverses the taste vector of a ``size`` share of the users.
Without one, a seed gives the same events as it always has.

The latent world is a :class:`SyntheticWorld`, so that it can be asked directly: :func:`generate_synthetic`
draws a fixed log from it (``true_prob`` keeps each event's true click probability, so tests can assert what is
better), and the closed-loop simulation (:mod:`stream_ctr.experiments.simulate`) lets its users click on what a ranking
shows them. A world and a log built from the same config share one random stream, in a fixed draw order, so a
seed gives the same events as it always has (offline evaluation tables depend on it).

>>> world = SyntheticWorld.from_config(SyntheticConfig(users=3, items=5, seed=1))
>>> world.user_ids, world.item_ids[-1]
(('u0', 'u1', 'u2'), 'i4')
>>> p = world.prob(2, [0, 4])
>>> p.shape, bool(((0 < p) & (p < 1)).all())
((2,), True)
>>> world.features(2, 4)["segment"]
's2'
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from stream_ctr.contracts.events import Event

__all__ = ["FEATURES", "Change", "SyntheticConfig", "SyntheticData", "SyntheticWorld", "generate_synthetic"]


#: The features a synthetic event carries (:meth:`SyntheticWorld.features`), as a ``STREAM_CTR_FEATURES`` value.
FEATURES = "category,segment"
SPAN_S = 86400 * 30  # the log's time span: events fall uniformly over 30 days


@dataclass(frozen=True)
class Change:
    """A change of the world at fraction ``at`` of the time span (see the module doc)."""

    kind: str  # "jump" | "ramp" | "flip"
    at: float = 0.5
    size: float = 1.0  # logit shift (jump, ramp) or share of users (flip)
    over: float = 0.2  # ramp length, as a fraction of the span
    seed: int = 1

    def __post_init__(self):
        if self.kind not in ("jump", "ramp", "flip"):
            raise ValueError(f"unknown change {self.kind!r}; choose jump, ramp or flip")

    @property
    def start_ts(self) -> float:
        return self.at * SPAN_S

    def logit_shift(self, ts: np.ndarray) -> np.ndarray:
        """What ``jump`` and ``ramp`` add to every prior logit at times ``ts``."""
        if self.kind == "jump":
            return np.where(ts >= self.start_ts, self.size, 0.0)
        if self.kind == "ramp":
            return self.size * np.clip((ts - self.start_ts) / (self.over * SPAN_S), 0.0, 1.0)
        return np.zeros_like(ts)

    def flipped(self, users: int) -> np.ndarray:
        """Which users' taste reverses (``flip``): a boolean mask, from the change's own random stream."""
        share = self.size if self.kind == "flip" else 0.0
        return np.random.default_rng(self.seed).random(users) < share


@dataclass(frozen=True)
class SyntheticConfig:
    users: int = 300
    items: int = 400
    events_per_user: int = 80
    dim: int = 4
    categories: int = 12
    drift: float = 2.0
    taste: float = 1.5
    base_ctr: float = 0.3
    seed: int = 0
    change: Change | None = None


@dataclass
class SyntheticData:
    events: list[Event]
    true_prob: np.ndarray  # per event, aligned with ``events``
    user_prior: dict[str, float]  # user -> mean true CTR


@dataclass(frozen=True, eq=False)
class SyntheticWorld:
    """The latent truth: user vectors ``u`` (users x dim), item vectors ``v`` (items x dim), each item's
    category index, each user's prior logit ``b`` and the ``taste`` weight of the preference term."""

    u: np.ndarray
    v: np.ndarray
    category: np.ndarray
    b: np.ndarray
    taste: float

    @classmethod
    def from_config(cls, cfg: SyntheticConfig, rng: np.random.Generator | None = None) -> SyntheticWorld:
        """Draw a world; ``rng`` defaults to ``default_rng(cfg.seed)``. :func:`generate_synthetic` passes its
        own generator and keeps drawing the log from it, so the draw order below must not change."""
        rng = np.random.default_rng(cfg.seed) if rng is None else rng
        u = rng.normal(size=(cfg.users, cfg.dim)) / np.sqrt(cfg.dim)
        v = rng.normal(size=(cfg.items, cfg.dim))
        category = np.argmax(v @ rng.normal(size=(cfg.dim, cfg.categories)), axis=1)
        base = np.log(cfg.base_ctr / (1 - cfg.base_ctr))
        b = base + cfg.drift * rng.normal(size=cfg.users)
        return cls(u, v, category, b, cfg.taste)

    @cached_property
    def user_ids(self) -> tuple[str, ...]:
        return tuple(f"u{n}" for n in range(len(self.u)))

    @cached_property
    def item_ids(self) -> tuple[str, ...]:
        return tuple(f"i{n}" for n in range(len(self.v)))

    def prob(self, user_index: int, item_indices, shift=0.0, flip: bool = False) -> np.ndarray:
        """True click probabilities of one user for the given items (any integer sequence or array), with
        ``shift`` added to the prior logit and, with ``flip``, the user's taste reversed."""
        items = np.asarray(item_indices, dtype=np.int64)
        taste = -self.taste if flip else self.taste
        return 1 / (1 + np.exp(-(self.b[user_index] + shift + taste * self.v[items] @ self.u[user_index])))

    def features(self, user_index: int, item_index: int) -> dict[str, str]:
        """The features an event of this user on this item carries (what the models see)."""
        return {"category": f"c{self.category[item_index]}", "segment": f"s{user_index % 7}"}


def generate_synthetic(cfg: SyntheticConfig = SyntheticConfig()) -> SyntheticData:
    rng = np.random.default_rng(cfg.seed)
    world = SyntheticWorld.from_config(cfg, rng)
    rows = []
    flipped = cfg.change.flipped(cfg.users) if cfg.change else np.zeros(cfg.users, bool)
    for user in range(cfg.users):
        items = rng.choice(cfg.items, size=cfg.events_per_user, replace=False)
        draws = rng.random(cfg.events_per_user)
        ts = np.sort(rng.uniform(0, SPAN_S, size=cfg.events_per_user))
        p = world.prob(user, items)
        if cfg.change is not None:
            flip = (ts >= cfg.change.start_ts) & flipped[user]
            p = np.where(flip, world.prob(user, items, flip=True), world.prob(user, items, cfg.change.logit_shift(ts)))
        clicks = draws < p
        rows += [(t, user, int(i), int(c), float(q)) for t, i, c, q in zip(ts, items, clicks, p)]
    rows.sort()
    events: list[Event] = []
    probs: list[float] = []
    prior: dict[str, list[float]] = {}
    for n, (t, user, item, click, q) in enumerate(rows):
        user_id = world.user_ids[user]
        features = world.features(user, item)
        events.append(Event(f"syn-{cfg.seed}-{n}", user_id, world.item_ids[item], float(t), click, features))
        probs.append(q)
        prior.setdefault(user_id, []).append(q)
    return SyntheticData(events, np.array(probs), {k: float(np.mean(q)) for k, q in prior.items()})
