"""Choosing a deployment's correction method from paired per-user results, only once the evidence is clear.

``auto`` keeps the method in use (the *default*) until a challenger is better with a CI that
excludes 0, then switches to the best such challenger. Its input is paired per-user evidence: for each
challenger, one metric difference per user (challenger minus default on the same users: per-user AUC on the
offline validation split, or per-user AUC / logloss from the service's shadow arms or A/B cells), with optional
per-user weights (impressions, as gAUC weighs users). CIs come from the paired user bootstrap
(:class:`stream_ctr.quality.bootstrap.UserBootstrap`); with ``k`` challengers the level is Bonferroni-adjusted
(``1 - (1 - level) / k`` each), so trying more variants does not make a spurious switch more likely.

The offline evaluator's ``ft_auto`` mode (:mod:`stream_ctr.evaluate.experiment`) uses this function on the
validation split, with ``ft`` as the default and the label-correction variants as challengers; the worker calls it
on its shadow arms' per-user AUCs (``ft`` against ``ft_lc``) whenever a report asks for the paired CIs
(``GET /v1/stats?fresh=1``, key ``auto`` of each scope; the demo report prints it).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> choose("none", {"lc": rng.normal(0.02, 0.05, 400), "lc_bias": rng.normal(0.0, 0.05, 400)}).method
'lc'
>>> choose("none", {"lc": rng.normal(0.0, 0.05, 400)}).method
'none'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from stream_ctr.quality.bootstrap import UserBootstrap

__all__ = ["Decision", "choose"]


@dataclass(frozen=True)
class Decision:
    """The method to use and why: ``estimates[challenger] = (mean difference, CI low, CI high)``."""

    method: str
    switched: bool
    estimates: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        if not self.estimates:
            return f"keep {self.method}: no challenger"
        d, lo, hi = self.estimates.get(self.method) or max(self.estimates.values())
        verdict = "better, CI above 0" if self.switched else "no challenger's CI above 0"
        action = "switch to" if self.switched else "keep"
        return f"{action} {self.method}: {verdict} (best {d:+.4f} [{lo:+.4f}, {hi:+.4f}])"


def choose(
    default: str,
    diffs: Mapping[str, np.ndarray],
    weights: Mapping[str, np.ndarray] | None = None,
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    min_users: int = 20,
) -> Decision:
    """The challenger in ``diffs`` with the largest mean difference among those whose CI lies above 0, else
    ``default``. ``diffs[m]``: per-user metric of ``m`` minus the default's (higher = better; pass minus a
    logloss difference); ``weights[m]``: per-user weights (default 1). A challenger with fewer than
    ``min_users`` users is not judged (too little evidence either way)."""
    estimates: dict[str, tuple[float, float, float]] = {}
    judged = {m: np.asarray(d, dtype=float) for m, d in diffs.items() if m != default}
    adjusted = 1 - (1 - level) / max(len(judged), 1)
    for m, d in judged.items():
        w = np.ones(len(d)) if weights is None or m not in weights else np.asarray(weights[m], dtype=float)
        ok = np.isfinite(d)
        if ok.sum() < min_users:
            continue
        boot = UserBootstrap(w[ok], n_boot, seed, level=adjusted)
        estimates[m] = (boot.mean(d[ok]), *boot.ci(d[ok]))
    winners = {m: e for m, e in estimates.items() if e[1] > 0}
    if not winners:
        return Decision(default, False, estimates)
    return Decision(max(winners, key=lambda m: winners[m][0]), True, estimates)
