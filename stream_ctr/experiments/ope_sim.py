"""``stream-ctr ab ope --simulate``: off-policy estimates set against the truth, on the closed-loop simulator.

The synthetic world's users (:mod:`stream_ctr.data.synthetic`) request rankings through
:class:`~stream_ctr.experiments.simulate.ClosedLoop` and click with their TRUE probabilities. Each arm ranks the
candidates by the user's true preference blurred by noise of its own strength (:data:`ARM_NOISE`: a stand-in for
models of different quality that needs no training), so the arms' CTRs differ and are known.

**Logging.** The requests are split into epochs, each run by its own experiment (salt, weights, coverage, as an
experiment file states them): users are assigned by :meth:`Experiment.assign
<stream_ctr.experiments.assignment.Experiment.assign>` as the service assigns them, and each exposure records
its arm's :meth:`~stream_ctr.experiments.assignment.Experiment.propensity`. By default the target arm ``ft_lc``
gets 8% of the users in the first epoch and 20% in the second. Before the experiment every user had
``pre_impressions`` impressions of random items (events without a ``request_id``): their click rate is the
covariate of the doubly-robust model. Exposure records and events go through the same join as ``ab ope`` on the
live topics (:func:`stream_ctr.experiments.exposures.logged_units`).

**Truth.** For each arm, a separate on-policy run of the closed loop in which that arm serves every request; the
mean over requests of the shown items' true probabilities is the arm's true CTR (requests are independent draws
of a user and candidates, so its Monte Carlo error is a plain standard error, reported). A policy mixing arms has
the mixture of their CTRs.

**A deliberate mistake.** The same log with every propensity recorded as 1/3 (the equal split of the default
experiment, with the real weights and coverage forgotten): IPS should miss the truth, SNIPS (which a propensity
off by one factor for all of the target's units does not move) should not.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, fields, replace

import numpy as np

from stream_ctr.data.synthetic import SyntheticConfig, SyntheticWorld
from stream_ctr.experiments.assignment import Arm, Experiment
from stream_ctr.experiments.exposures import logged_units
from stream_ctr.experiments.ope import Estimate, Logged, Policy, ips, report
from stream_ctr.experiments.simulate import ClosedLoop, Scorer, SimConfig

__all__ = ["ARM_NOISE", "OPESimConfig", "WRONG_PROPENSITY", "run_simulation"]

#: Noise (std, on the logit scale) each simulated arm adds to the user's true preference before ranking.
ARM_NOISE = {"global": 3.0, "ft": 1.5, "ft_lc": 0.5}

#: The wrong propensity of the deliberate mistake: three arms, equal weights, every user.
WRONG_PROPENSITY = 1 / 3

_START_TS = 1_000_000.0  # the experiment starts here; the pre-experiment history lies before it
_SECONDS_PER_EVENT = 0.001


def _default_epochs() -> tuple[Experiment, ...]:
    return (
        Experiment("ope-sim", "epoch-1", (Arm("global", 6), Arm("ft", 3), Arm("ft_lc", 1)), coverage=0.8),
        Experiment("ope-sim", "epoch-2", (Arm("global", 2), Arm("ft", 2), Arm("ft_lc", 1)), coverage=1.0),
    )


@dataclass(frozen=True)
class OPESimConfig:
    """``requests`` logged under ``epochs`` (equal shares, in order), ``truth_requests`` per arm for the truth."""

    users: int = 500
    items: int = 300
    requests: int = 8000
    candidates: int = 30
    k: int = 5
    pre_impressions: int = 20
    truth_requests: int = 20_000
    window_s: float = 60.0
    seed: int = 0
    epochs: tuple[Experiment, ...] = field(default_factory=_default_epochs)

    def __post_init__(self):
        for name in ("users", "items", "requests", "candidates", "k", "pre_impressions", "truth_requests"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.epochs or any(a.name not in ARM_NOISE for e in self.epochs for a in e.arms):
            raise ValueError(f"need at least one epoch, whose arms are among {list(ARM_NOISE)}")


def _ranker(world: SyntheticWorld, arm: str, rng: np.random.Generator) -> Scorer:
    """Rank by the user's true preference plus ``ARM_NOISE[arm]`` of Gaussian noise."""
    user_index = {u: n for n, u in enumerate(world.user_ids)}
    item_index = {i: n for n, i in enumerate(world.item_ids)}

    def score(request: dict) -> dict:
        ids = [c["item_id"] for c in request["candidates"]]
        u = world.u[user_index[request["user_id"]]]
        s = world.taste * world.v[[item_index[i] for i in ids]] @ u + ARM_NOISE[arm] * rng.normal(size=len(ids))
        order = np.argsort(-s, kind="stable")
        items = [{"item_id": ids[j], "score": float(s[j])} for j in order]
        return {"request_id": request["request_id"], "arm": arm, "model_version": 0, "items": items}

    return score


def _logging_scorer(world: SyntheticWorld, cfg: OPESimConfig, exposures: list[dict]) -> Scorer:
    """Serve each request the arm its epoch's experiment assigns; append the exposure record it logs."""
    rng = np.random.default_rng([cfg.seed, 1])
    rankers = {arm: _ranker(world, arm, rng) for arm in ARM_NOISE}
    calls = itertools.count()
    per_epoch = math.ceil(cfg.requests / len(cfg.epochs))

    def score(request: dict) -> dict:
        n = next(calls)
        experiment = cfg.epochs[min(n // per_epoch, len(cfg.epochs) - 1)]
        assignment = experiment.assign(request["user_id"])
        response = rankers[assignment.arm](request)
        items = [{**it, "position": pos} for pos, it in enumerate(response["items"][: cfg.k])]
        exposures.append(
            {
                "request_id": request["request_id"],
                "user_id": request["user_id"],
                "arm": assignment.arm,
                "experiment": experiment.name,
                "in_experiment": assignment.in_experiment,
                "model_version": 0,
                "ts": _START_TS + n * cfg.k * _SECONDS_PER_EVENT,
                "propensity": experiment.propensity(assignment.arm),
                "items": items,
            }
        )
        return response

    return score


def _history(world: SyntheticWorld, cfg: OPESimConfig) -> list[tuple[dict, float]]:
    """Each user's impressions before the experiment: random items, clicked with the true probabilities."""
    rng = np.random.default_rng([cfg.seed, 2])
    out = []
    for user, user_id in enumerate(world.user_ids):
        items = rng.integers(len(world.item_ids), size=cfg.pre_impressions)
        clicks = rng.random(cfg.pre_impressions) < world.prob(user, items)
        for n, (item, click) in enumerate(zip(items, clicks)):
            ts = _START_TS - 3600.0 + n
            event = {"user_id": user_id, "item_id": world.item_ids[item], "ts": ts, "label": int(click)}
            out.append(({**event, "request_id": None}, ts))
    return out


def simulate_log(world: SyntheticWorld, cfg: OPESimConfig) -> Logged:
    """Run the logging policy through the closed loop; the log as :func:`.exposures.logged_units` reads it."""
    exposures: list[dict] = []
    events = _history(world, cfg)
    sim = SimConfig(cfg.requests, cfg.candidates, cfg.k, cfg.seed, _START_TS, _SECONDS_PER_EVENT)
    ClosedLoop(world, sim).run(_logging_scorer(world, cfg, exposures), lambda e: events.append((e.to_dict(), e.ts)))
    return logged_units(exposures, events, cfg.window_s)


def true_ctr(world: SyntheticWorld, cfg: OPESimConfig, arm: str) -> tuple[float, float]:
    """``arm``'s expected CTR when it serves every request, and the Monte Carlo standard error of that figure."""
    seed = cfg.seed * 1000 + 500 + list(ARM_NOISE).index(arm)
    loop = ClosedLoop(world, SimConfig(cfg.truth_requests, cfg.candidates, cfg.k, seed))
    score = _ranker(world, arm, np.random.default_rng(seed))
    per_request = np.empty(cfg.truth_requests)
    for n in range(cfg.truth_requests):
        before = loop.arms[arm].expected if arm in loop.arms else 0.0
        loop.step(score)
        per_request[n] = (loop.arms[arm].expected - before) / cfg.k
    return float(per_request.mean()), float(per_request.std(ddof=1) / math.sqrt(len(per_request)))


def run_simulation(cfg: OPESimConfig, policy: Policy = "ft_lc") -> dict:
    """Log, estimate ``policy`` off-policy (:func:`.ope.report`), and add its true CTR and the deliberate mistake."""
    world = SyntheticWorld.from_config(SyntheticConfig(users=cfg.users, items=cfg.items, seed=cfg.seed))
    log = simulate_log(world, cfg)
    out = report(log, policy)
    truths = {arm: true_ctr(world, cfg, arm) for arm in out["policy"]}
    wrong = ips(replace(log, propensity=np.full(log.units, WRONG_PROPENSITY)), policy)
    return {
        **out,
        "truth": sum(mass * truths[a][0] for a, mass in out["policy"].items()),
        "truth_se": math.sqrt(sum((mass * truths[a][1]) ** 2 for a, mass in out["policy"].items())),
        "truth_per_arm": {a: {"ctr": c, "se": se} for a, (c, se) in truths.items()},
        "logging": [_describe(e) for e in cfg.epochs],
        "wrong_propensity_ips": replace(wrong, estimator=f"IPS, propensity wrongly {WRONG_PROPENSITY:.3g}"),
        "config": {**{f.name: getattr(cfg, f.name) for f in fields(cfg)}, "epochs": [e.to_dict() for e in cfg.epochs]},
    }


def _describe(experiment: Experiment) -> str:
    """``epoch-1: global 48%, ft 24%, ft_lc 8%`` (each arm's propensity)."""
    shares = ", ".join(f"{a.name} {experiment.propensity(a.name):.0%}" for a in experiment.arms)
    return f"{experiment.salt}: {shares} (coverage {experiment.coverage:.0%})"


def covers(estimate: Estimate, value: float) -> bool:
    """Whether ``estimate``'s 95% CI holds ``value``."""
    return estimate.ci[0] <= value <= estimate.ci[1]
