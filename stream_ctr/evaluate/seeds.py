"""Several seeds of one experiment, summarised with CIs that account for users *and* seeds.

One seed fixes the cloud model's initialisation and batch order (and, for ``synthetic``, the world itself), so a
one-seed difference of 0.002 gAUC may be the seed's luck. :func:`run_seeds` runs the same experiment once per
seed and :func:`summarise` reports, per (model, scope, mode), the mean over seeds of the gAUC, of its difference
to ``cloud`` and of its difference to ``ft``, each with a 95% CI from :class:`SeedUserBootstrap`.

**The two-level bootstrap** (docs/EVALUATION.md, "Several seeds"). Each replicate draws ``S`` seeds with
replacement from the ``S`` run, and users with replacement from the union of user ids; a seed's replicate value is
the impression-weighted mean of the per-user values of the drawn users it has, and the replicate is the mean of
its drawn seeds' values. The user draw is shared by the seeds of a replicate, keyed by user id:

* where every seed has the *same* users (ML-100K: a seed changes the model, not the data), a user's sampling noise
  is common to all seeds and does not average away over seeds; drawing users independently per seed would shrink
  the user-level variance by ``1/S`` and give CIs too narrow;
* where every seed has *new* users (``synthetic``: a seed draws a new world; the ids ``u0, u1, ...`` repeat but
  name unrelated users), resampling the per-id averages over seeds has the same variance as independent draws
  per seed, so the shared draw costs nothing there.

Point estimates are plain means over seeds of the per-seed (weighted over users) means.

>>> users = [["a", "b", "c"], ["a", "b", "c"]]
>>> boot = SeedUserBootstrap(users, [np.ones(3), np.ones(3)], n_boot=200, seed=0)
>>> boot.mean([np.array([0.1, 0.2, 0.3]), np.array([0.3, 0.4, 0.5])])
0.3
>>> boot.ci([np.zeros(3), np.zeros(3)])
(0.0, 0.0)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from stream_ctr.quality.bootstrap import UserBootstrap

__all__ = ["MultiSeed", "SeedUserBootstrap", "run_seeds", "summarise"]


class SeedUserBootstrap:
    """Means over seeds of per-seed weighted means of per-user values, and their two-level percentile CIs.

    ``users[s]`` names the users of seed ``s`` and ``weights[s]`` their weights (test impressions), aligned with
    the per-user value arrays later passed to :meth:`mean`, :meth:`replicates` and :meth:`ci`. The resamples are
    drawn once from ``seed``, so every (model, mode) is resampled alike and differences stay paired.
    """

    def __init__(
        self,
        users: Sequence[Sequence[str]],
        weights: Sequence[np.ndarray],
        n_boot: int = 1000,
        seed: int = 0,
        level: float = 0.95,
    ):
        if len(users) != len(weights) or not users:
            raise ValueError("need one user list and one weight array per seed, at least one seed")
        self.level = level
        ids = sorted({u for us in users for u in us})
        where = {u: i for i, u in enumerate(ids)}
        self.pos = [np.array([where[u] for u in us], dtype=int) for us in users]
        self.weights = [np.asarray(w, dtype=float) for w in weights]
        # counts[b, i]: how often user id i is drawn in replicate b (one owner of user resampling: UserBootstrap).
        self.counts = UserBootstrap(np.ones(len(ids)), n_boot, seed).counts
        self.seed_draws = np.random.default_rng(seed + 1).integers(0, len(users), size=(n_boot, len(users)))

    def mean(self, values: Sequence[np.ndarray]) -> float:
        """Mean over seeds of each seed's weighted mean of ``values[s]``."""
        return float(np.mean([_wmean(v, w) for v, w in zip(values, self.weights)]))

    def replicates(self, values: Sequence[np.ndarray]) -> np.ndarray:
        """One value per replicate: the mean over the drawn seeds of their user-resampled weighted means."""
        per_seed = []
        for pos, w, v in zip(self.pos, self.weights, values):
            cw = self.counts[:, pos] * w
            with np.errstate(invalid="ignore", divide="ignore"):  # no user of this seed drawn: nan, skipped
                per_seed.append(cw @ np.asarray(v, float) / cw.sum(axis=1))
        table = np.array(per_seed)  # [seed, replicate]
        drawn = table[self.seed_draws, np.arange(len(self.counts))[:, None]]  # [replicate, draw]
        with warnings.catch_warnings():  # a replicate with none of its seeds' users drawn is nan (tiny worlds)
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(drawn, axis=1)

    def ci(self, values: Sequence[np.ndarray]) -> tuple[float, float]:
        """Percentile CI of :meth:`mean` under the two-level resampling."""
        reps = self.replicates(values)
        alpha = (1 - self.level) / 2
        lo, hi = np.nanquantile(reps, [alpha, 1 - alpha])
        return float(lo), float(hi)


def _wmean(values: np.ndarray, weights: np.ndarray) -> float:
    """The weighted mean over users (gAUC's weighting), by :meth:`UserBootstrap.mean`."""
    return UserBootstrap(weights, 0).mean(np.asarray(values, float))


@dataclass
class MultiSeed:
    """The per-seed results of :func:`run_seeds` and their :func:`summarise` rows."""

    dataset: str
    seeds: list[int]
    results: list  # one stream_ctr.evaluate.experiment.Result per seed
    rows: list[dict]


def run_seeds(
    load_seed: Callable[[int], tuple], cfg, seeds: Sequence[int], dataset: str = "", on_seed: Callable | None = None
) -> MultiSeed:
    """Run ``cfg`` once per seed on ``load_seed(seed) -> (events, spec)``; ``on_seed(seed, result)`` is called
    after each seed (to write it out before the next one starts)."""
    from dataclasses import replace

    from stream_ctr.evaluate.experiment import run_experiment

    results = []
    for s in seeds:
        events, spec = load_seed(s)
        result = run_experiment(events, spec, replace(cfg, seed=s), dataset=dataset)
        results.append(result)
        if on_seed is not None:
            on_seed(s, result)
    return MultiSeed(dataset, list(seeds), results, summarise(results, cfg.n_boot))


def _diff(results, scope: str, model: str, mode: str, base: str) -> list[np.ndarray]:
    return [r.per_user[scope].auc[model][mode] - r.per_user[scope].auc[model][base] for r in results]


def summarise(results: list, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Rows ``{model, scope, mode, seeds, gauc, gauc_ci, vs_cloud, vs_ft, per_seed, logloss, calibration}``;
    ``vs_*`` = ``{delta, ci, per_seed}`` (mean over seeds, two-level CI, each seed's own delta)."""
    rows = []
    first = results[0]
    for scope, pu in first.per_user.items():
        boot = SeedUserBootstrap(
            [r.per_user[scope].users for r in results], [r.per_user[scope].weights for r in results], n_boot, seed
        )
        for model in pu.auc:
            for mode in pu.auc[model]:
                per = [r.per_user[scope].auc[model][mode] for r in results]
                seed_rows = [_row(r, model, scope, mode) for r in results]
                row = {
                    "model": model,
                    "scope": scope,
                    "mode": mode,
                    "seeds": len(results),
                    "gauc": boot.mean(per),
                    "gauc_ci": list(boot.ci(per)),
                    "logloss": float(np.mean([x["logloss"] for x in seed_rows])),
                    "calibration": float(np.mean([x["calibration"] for x in seed_rows])),
                    "n_users": float(np.mean([x["n_users"] for x in seed_rows])),
                }
                for base in ("cloud", "ft"):
                    if mode in ("cloud", base) or base not in pu.auc[model]:
                        continue
                    d = _diff(results, scope, model, mode, base)
                    row[f"vs_{base}"] = {
                        "delta": boot.mean(d),
                        "ci": list(boot.ci(d)),
                        "per_seed": [_wmean(x, w) for x, w in zip(d, boot.weights)],
                    }
                picks = [x["chosen"].get("pick") for x in seed_rows if x.get("chosen")]
                if any(picks):
                    row["picks"] = picks
                rows.append(row)
    return rows


def _row(result, model: str, scope: str, mode: str) -> dict:
    for r in result.rows:
        if (r["model"], r["scope"], r["mode"]) == (model, scope, mode):
            return r
    raise KeyError((model, scope, mode))
