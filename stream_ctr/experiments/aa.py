"""``stream-ctr ab aa``: how often each way of reading an experiment cries wolf, and how soon it finds a real lift.

Simulated, in process (no Kafka, no HTTP): the synthetic world's users (:mod:`stream_ctr.data.synthetic`, each with
their own click prior and taste) are split 50/50 by user, then request rankings of ``k`` random items and click
with their true probabilities. Before the experiment each user had ``pre_impressions`` impressions: their click
rate there is the CUPED covariate (:mod:`.sequential`). The result is read after every ``peek_every`` requests,
as a live dashboard is read.

- **A/A runs** (both arms the same): ``fpr_sequential`` is the share of runs in which the always-valid sequence
  excluded 0 at *any* reading; ``fpr_naive_peeking`` the same for the 95% fixed-horizon interval read at every
  reading; ``fpr_fixed_horizon`` that interval read once, at the end (the only reading it is valid for).
- **Planted runs**: arm ``b``'s click probabilities are ``(1 + lift)`` times arm ``a``'s. ``power_planted`` is the
  share of runs in which the sequence with CUPED excluded 0 by the end, ``median_requests_to_detect`` (without
  CUPED) and ``median_requests_to_detect_cuped`` the median request count at the first reading that did
  (undetected runs count as never).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from stream_ctr.data.synthetic import SyntheticConfig, SyntheticWorld
from stream_ctr.experiments.sequential import ALPHA, SequentialDifference, sequential_difference, srm_p_value
from stream_ctr.experiments.stats import SRM_ALPHA, srm_test

__all__ = ["AAConfig", "RunResult", "render_markdown", "run_aa", "simulate_run"]


@dataclass(frozen=True)
class AAConfig:
    """One study: ``runs`` A/A runs and ``runs`` planted runs of the same size."""

    runs: int = 200
    users: int = 2000
    items: int = 400
    requests: int = 40_000
    k: int = 5
    peek_every: int = 1000
    lift: float = 0.15
    pre_impressions: int = 20
    alpha: float = ALPHA
    seed: int = 0

    def __post_init__(self):
        for name in ("runs", "users", "items", "requests", "k", "peek_every", "pre_impressions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (0 < self.alpha < 1) or self.lift < 0 or self.k > self.items:
            raise ValueError("need 0 < alpha < 1, lift >= 0 and k <= items")


@dataclass
class RunResult:
    """What the readings of one run decided."""

    sequential: bool = False  # the always-valid sequence excluded 0 at some reading
    sequential_cuped: bool = False
    naive: bool = False  # the fixed-horizon interval excluded 0 at some reading
    fixed_final: bool = False  # ... at the last reading
    detect_at: float = math.inf  # requests at the first reading whose sequence excluded 0
    detect_at_cuped: float = math.inf
    variance_reduction: float = 0.0  # CUPED's, at the last reading
    srm_sequential: bool = False  # the always-valid sample-ratio p-value fell below SRM_ALPHA at some reading
    srm_chi2: bool = False  # ... the chi-square p-value
    readings: list[float] = field(default_factory=list)


def simulate_run(cfg: AAConfig, run: int, lift: float) -> RunResult:
    """One experiment in a fresh world, read every ``peek_every`` requests."""
    rng = np.random.default_rng([cfg.seed, run, int(lift > 0)])
    world = SyntheticWorld.from_config(SyntheticConfig(users=cfg.users, items=cfg.items, seed=cfg.seed * 100_003 + run))
    probs = np.stack([world.prob(u, np.arange(cfg.items)) for u in range(cfg.users)])
    arm_b = rng.random(cfg.users) < 0.5
    pre_items = rng.integers(cfg.items, size=(cfg.users, cfg.pre_impressions))
    covariate = (rng.random(pre_items.shape) < np.take_along_axis(probs, pre_items, axis=1)).mean(axis=1)
    users = rng.integers(cfg.users, size=cfg.requests)
    p = probs[users[:, None], rng.integers(cfg.items, size=(cfg.requests, cfg.k))]
    p = np.where(arm_b[users][:, None], np.minimum(p * (1 + lift), 1.0), p)
    clicks = (rng.random(p.shape) < p).sum(axis=1)
    first_request = np.full(cfg.users, cfg.requests)
    np.minimum.at(first_request, users, np.arange(cfg.requests))
    result = RunResult()
    for end in range(cfg.peek_every, cfg.requests + 1, cfg.peek_every):
        plain, cuped = _read(cfg, users[:end], clicks[:end], arm_b, covariate)
        split = _split(first_request < end, arm_b)
        result.srm_sequential |= srm_p_value(*split) < SRM_ALPHA
        result.srm_chi2 |= srm_test(*split).alarm
        result.readings.append(plain.delta)
        result.naive |= plain.significant_fixed
        result.fixed_final = plain.significant_fixed
        result.variance_reduction = cuped.variance_reduction
        if plain.significant and not result.sequential:
            result.sequential, result.detect_at = True, end
        if cuped.significant and not result.sequential_cuped:
            result.sequential_cuped, result.detect_at_cuped = True, end
    return result


def _split(seen: np.ndarray, arm_b: np.ndarray) -> tuple[dict[str, int], dict[str, float]]:
    """Users seen per arm so far (``seen``: a mask over users), and the configured 50/50 weights."""
    b = int((seen & arm_b).sum())
    return {"a": int(seen.sum()) - b, "b": b}, {"a": 1.0, "b": 1.0}


def _read(cfg: AAConfig, users, clicks, arm_b, covariate) -> tuple[SequentialDifference, SequentialDifference]:
    """The experiment as read after these requests: plain and with CUPED."""
    num = np.bincount(users, weights=clicks, minlength=cfg.users)
    den = np.bincount(users, minlength=cfg.users) * float(cfg.k)
    seen = den > 0
    a, b = seen & ~arm_b, seen & arm_b
    arms = ((num[a], den[a]), (num[b], den[b]))
    t_star = cfg.users
    plain = sequential_difference(*arms, alpha=cfg.alpha, t_star=t_star)
    cuped = sequential_difference(*arms, covariate=(covariate[a], covariate[b]), alpha=cfg.alpha, t_star=t_star)
    return plain, cuped


def _share(flags: list[bool]) -> dict:
    """A share of runs with its Monte Carlo standard error."""
    p = float(np.mean(flags))
    return {"value": p, "mc_se": math.sqrt(p * (1 - p) / len(flags))}


def _median(values: list[float]) -> float | None:
    """The median request count; None when most runs never detected."""
    m = float(np.median(values))
    return None if math.isinf(m) else m


def run_aa(cfg: AAConfig, progress=None) -> dict:
    """The study's figures (the keys ``stream-ctr ab aa --json`` writes)."""
    aa, planted = [], []
    for run in range(cfg.runs):
        aa.append(simulate_run(cfg, run, 0.0))
        planted.append(simulate_run(cfg, run, cfg.lift))
        if progress is not None:
            progress(run + 1)
    shares = {
        "fpr_sequential": _share([r.sequential for r in aa]),
        "fpr_sequential_cuped": _share([r.sequential_cuped for r in aa]),
        "fpr_naive_peeking": _share([r.naive for r in aa]),
        "fpr_fixed_horizon": _share([r.fixed_final for r in aa]),
        "srm_false_alarms_sequential": _share([r.srm_sequential for r in aa + planted]),
        "srm_false_alarms_chi2_peeking": _share([r.srm_chi2 for r in aa + planted]),
        "power_planted": _share([r.sequential_cuped for r in planted]),
        "power_planted_without_cuped": _share([r.sequential for r in planted]),
    }
    return {
        **{key: share["value"] for key, share in shares.items()},
        "mc_se": {key: share["mc_se"] for key, share in shares.items()},
        "planted_lift": cfg.lift,
        "cuped_variance_reduction": float(np.median([r.variance_reduction for r in aa + planted])),
        "median_requests_to_detect": _median([r.detect_at for r in planted]),
        "median_requests_to_detect_cuped": _median([r.detect_at_cuped for r in planted]),
        "readings_per_run": cfg.requests // cfg.peek_every,
        "config": asdict(cfg),
    }


def render_markdown(out: dict) -> str:
    """The study as a short table."""
    se = out["mc_se"]
    rows = [
        ("A/A: always-valid sequence, read at every reading", "fpr_sequential"),
        ("A/A: the same with CUPED", "fpr_sequential_cuped"),
        ("A/A: 95% fixed-horizon interval, read at every reading (peeking)", "fpr_naive_peeking"),
        ("A/A: 95% fixed-horizon interval, read once at the end", "fpr_fixed_horizon"),
        ("sample-ratio alarm (p < 0.001) on a correct split, always-valid, any reading", "srm_false_alarms_sequential"),
        ("sample-ratio alarm (p < 0.001) on a correct split, chi-square, any reading", "srm_false_alarms_chi2_peeking"),
        (f"planted +{out['planted_lift']:.0%}: detected by the sequence with CUPED", "power_planted"),
        (f"planted +{out['planted_lift']:.0%}: detected by the sequence without CUPED", "power_planted_without_cuped"),
    ]
    lines = [
        f"# A/A and power: {out['config']['runs']} runs each, read {out['readings_per_run']} times "
        f"(alpha {out['config']['alpha']})",
        "",
        "| reading | share of runs | Monte Carlo SE |",
        "|---|---:|---:|",
        *(f"| {label} | {out[key]:.3f} | {se[key]:.3f} |" for label, key in rows),
        "",
        f"CUPED variance reduction (median): {out['cuped_variance_reduction']:.1%}. Median requests to detection: "
        f"{out['median_requests_to_detect']} without CUPED, {out['median_requests_to_detect_cuped']} with.",
    ]
    return "\n".join(lines) + "\n"
