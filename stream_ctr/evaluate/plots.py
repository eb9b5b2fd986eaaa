"""The two pictures of an experiment (PNG, matplotlib's Agg backend, no display needed).

* ``local_ctr.png``: the distribution of users' local CTR p_u against the global CTR p_g: how far the users sit
  from the prior the cloud model learned.
* ``drift_harm.png``: per user, the change of test AUC after fine-tuning (``ft`` and ``ft_lc`` minus ``cloud``)
  against ``|p_u - p_g|``, one panel per model, with the mean in bins of drift: where fine-tuning hurts and
  whether label correction removes the harm for the drifted users.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from stream_ctr.contracts.arms import FINE_TUNED  # noqa: E402

__all__ = ["plot_drift_harm", "plot_local_ctr"]


def plot_local_ctr(path: Path, local_ctr: np.ndarray, p_g: float, title: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.hist(local_ctr, bins=np.linspace(0, 1, 41).tolist(), color="#4c72b0", alpha=0.85)
    ax.axvline(p_g, color="#c44e52", lw=2, label=f"global CTR p_g = {p_g:.3f}")
    ax.set_xlabel("local CTR p_u (user's click share)")
    ax.set_ylabel("users")
    ax.set_title(title or "local CTR vs global CTR")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _binned(x: np.ndarray, y: np.ndarray, bins: int = 6) -> tuple[np.ndarray, np.ndarray]:
    if len(x) == 0:
        return np.zeros(0), np.zeros(0)
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, max(len(edges) - 2, 0))
    cx = [x[which == b].mean() for b in range(len(edges) - 1) if (which == b).any()]
    cy = [y[which == b].mean() for b in range(len(edges) - 1) if (which == b).any()]
    return np.array(cx), np.array(cy)


def plot_drift_harm(
    path: Path,
    drift: np.ndarray,
    auc: dict[str, dict[str, np.ndarray]],
    scope: str = "",
    modes: tuple[str, ...] = tuple(FINE_TUNED),
) -> Path:
    """``auc[model][mode]``: per-user test AUC aligned with ``drift``; needs a ``cloud`` entry per model."""
    models = [m for m in auc if "cloud" in auc[m] and any(k in auc[m] for k in modes)]
    n = max(len(models), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.4), squeeze=False, sharey=True)
    colours = {"ft": "#dd8452", "ft_lc": "#55a868", "ft_reweight": "#8172b3", "ft_logit": "#937860"}
    span = 1e-3  # y range: the bulk of the per-user changes and every bin mean, not the few outliers
    for ax, model in zip(axes[0], models):
        for mode in modes:
            if mode not in auc[model]:
                continue
            delta = auc[model][mode] - auc[model]["cloud"]
            c = colours.get(mode)
            ax.scatter(drift, delta, s=6, alpha=0.25, color=c)
            bx, by = _binned(drift, delta)
            ax.plot(bx, by, "-o", color=c, lw=2, ms=4, label=f"{mode} (bin mean)")
            if len(delta):
                span = max(span, float(np.quantile(np.abs(delta), 0.9)), 3 * float(np.abs(by).max()))
        ax.axhline(0, color="k", lw=0.8)
        ax.set_title(f"{model} ({scope})" if scope else model)
        ax.set_xlabel("|p_u - p_g|")
    axes[0][0].set_ylim(-1.1 * span, 1.1 * span)
    axes[0][0].set_ylabel("per-user AUC change vs cloud")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
