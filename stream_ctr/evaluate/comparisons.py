"""The companion methods' questions as paired differences: does a companion mode beat the mode it builds on,
overall and by user activity, and how do the global models compare (``global_<how>`` rows against ``cloud``).

Each comparison is ``mode - base`` of the per-user test AUC (gAUC's weighting), over one seed or several, with the
two-level bootstrap of :mod:`.seeds` (one seed: a plain paired user bootstrap). **Activity buckets**: a seed's
users (those with both classes in test) are cut at the terciles of their fine-tune event counts into ``cold``
(the third with the fewest local events), ``mid`` and ``warm``; a bucket's CI resamples its own users. A
bucket empty in any seed is left out.
"""

from __future__ import annotations

import numpy as np

from stream_ctr.evaluate.seeds import SeedUserBootstrap
from stream_ctr.quality.bootstrap import delta_cell

__all__ = ["BASES", "BUCKETS", "compare", "comparisons_table"]

#: mode -> the modes it is compared against (what it should beat, at equal budget).
BASES: dict[str, tuple[str, ...]] = {
    "ft_ode": ("ft_fifo", "ft_reservoir", "ft"),
    "ft_lc_ode": ("ft_lc_fifo", "ft_lc_reservoir", "ft_lc"),
    "ft_fifo": ("ft",),
    "ft_reservoir": ("ft",),
    "ft_lc_fifo": ("ft_lc",),
    "ft_lc_reservoir": ("ft_lc",),
    "ft_coda": ("ft", "cloud"),
    "ft_lc_coda": ("ft_lc", "cloud"),
    "global_fedavg": ("cloud",),
    "global_centralized": ("cloud",),
    "global_fedsubavg": ("cloud", "global_fedavg"),
}
BUCKETS = ("all", "cold", "mid", "warm")


def _bucket_masks(activity: np.ndarray) -> dict[str, np.ndarray]:
    """Users by activity tercile; where every user has the same count (a synthetic world) there are no terciles,
    so ``cold``, ``mid`` and ``warm`` are empty (and not reported) rather than ``cold`` holding everyone."""
    if len(activity) == 0 or np.ptp(activity) == 0:
        none = np.zeros(len(activity), bool)
        return {"all": np.ones(len(activity), bool), "cold": none, "mid": none, "warm": none}
    lo, hi = np.quantile(activity, [1 / 3, 2 / 3])
    return {
        "all": np.ones(len(activity), bool),
        "cold": activity <= lo,
        "mid": (activity > lo) & (activity <= hi),
        "warm": activity > hi,
    }


def compare(results: list, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Rows ``{model, scope, mode, base, bucket, delta, ci, users}`` for every pair of :data:`BASES` present in
    ``results`` (one :class:`~stream_ctr.evaluate.experiment.Result` per seed, same models and modes)."""
    rows = []
    for scope, pu in results[0].per_user.items():
        masks = [_bucket_masks(r.per_user[scope].activity) for r in results]
        for bucket in BUCKETS:
            users = [np.asarray(r.per_user[scope].users)[m[bucket]] for r, m in zip(results, masks)]
            weights = [r.per_user[scope].weights[m[bucket]] for r, m in zip(results, masks)]
            if not all(len(u) for u in users):
                continue
            boot = SeedUserBootstrap(users, weights, n_boot, seed)
            for model, aucs in pu.auc.items():
                for mode, bases in BASES.items():
                    for base in bases:
                        if mode not in aucs or base not in aucs:
                            continue
                        d = [
                            (r.per_user[scope].auc[model][mode] - r.per_user[scope].auc[model][base])[m[bucket]]
                            for r, m in zip(results, masks)
                        ]
                        rows.append(
                            {
                                "model": model,
                                "scope": scope,
                                "mode": mode,
                                "base": base,
                                "bucket": bucket,
                                "delta": boot.mean(d),
                                "ci": list(boot.ci(d)),
                                "users": int(sum(len(u) for u in users)),
                            }
                        )
    return rows


def comparisons_table(rows: list[dict]) -> str:
    """One line per (model, scope, mode, base), one column per activity bucket; ``*`` = the CI excludes 0."""
    keyed: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        keyed.setdefault((r["model"], r["scope"], r["mode"], r["base"]), {})[r["bucket"]] = r
    head = "| model | scope | mode − base | " + " | ".join(f"{b} [95% CI]" for b in BUCKETS) + " |"
    lines = [head, "|" + "|".join(["---"] * (3 + len(BUCKETS))) + "|"]
    for (model, scope, mode, base), cells in keyed.items():
        parts = [delta_cell(cells.get(b)) for b in BUCKETS]
        lines.append(f"| {model} | {scope} | {mode} − {base} | " + " | ".join(parts) + " |")
    return "\n".join(lines)
