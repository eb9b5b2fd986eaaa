"""The regime map: where fine-tuning and label correction help, on the synthetic generator.

One axis at a time is swept around a small base world (:data:`BASE`), the others held at the base:

* ``drift``: the prior gap between users (std of the users' prior logits);
* ``taste``: the strength of personal taste (weight of the preference term ``u . v``);
* ``events_per_user``: how much history each user has (so how many events fine-tuning sees);
* ``ramp``: global drift over time, every prior logit rising by this much from 30% to 80% of the time span
  (:class:`stream_ctr.data.synthetic.Change` ``ramp``): the click rate of the whole stream moves.

Every world is run with :func:`~stream_ctr.evaluate.seeds.run_seeds` (each seed draws a new world), and the map
reports ``ft - cloud`` and each correction mode minus ``ft`` with the two-level CIs over users and seeds. The base
world appears once per axis but is run once. ``stream-ctr evaluate --dataset synthetic --regimes`` writes
``regimes.json``, ``regimes.md`` and ``regimes.png``.

>>> world("ramp", 2.0, seed=4).change.size, world("taste", 1.0, seed=4).taste, world("drift", 0.0, 4).users
(2.0, 1.0, 200)
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

from stream_ctr.contracts.features import FeatureSpec
from stream_ctr.data import SyntheticConfig, generate_synthetic
from stream_ctr.data.synthetic import FEATURES, Change
from stream_ctr.evaluate.seeds import run_seeds
from stream_ctr.quality.bootstrap import delta_cell

__all__ = ["AXES", "BASE", "plot_regimes", "regimes_table", "run_regimes", "world"]

#: The base world: small, so that the whole map runs in minutes on a laptop CPU.
BASE = SyntheticConfig(users=200, items=200, events_per_user=60, dim=2, categories=8, taste=3.0, drift=2.0)
#: Axis -> its values; the base's value of each axis is among them.
AXES = {
    "drift": (0.0, 1.0, 2.0, 3.0),
    "taste": (1.0, 2.0, 3.0, 5.0),
    "events_per_user": (20, 40, 60, 160),
    "ramp": (0.0, 1.0, 2.0, 3.0),
}


def world(axis: str, value: float, seed: int) -> SyntheticConfig:
    """The base world with ``axis`` set to ``value``."""
    cfg = replace(BASE, seed=seed)
    if axis == "ramp":
        return replace(cfg, change=Change("ramp", at=0.3, size=float(value), over=0.5)) if value else cfg
    if axis == "events_per_user":
        return replace(cfg, events_per_user=int(value))
    if axis == "drift":
        return replace(cfg, drift=float(value))
    if axis == "taste":
        return replace(cfg, taste=float(value))
    raise ValueError(f"unknown regime axis {axis!r}; choose from {list(AXES)}")


def _world_events(axis: str, value: float, spec: FeatureSpec, seed: int) -> tuple:
    """``(events, spec)`` of one seed's draw of the world ``axis = value``: the ``load_seed`` of run_seeds."""
    return generate_synthetic(world(axis, value, seed)).events, spec


def _key(axis: str, value) -> tuple:
    """Worlds equal to the base (whatever the axis) share one key, so the base is run once."""
    cfg = world(axis, value, 0)
    return ("base",) if cfg == replace(BASE, seed=0) else (axis, value)


def run_regimes(cfg, seeds, axes: dict = AXES, buckets: int = 1 << 15, on_world=None) -> list[dict]:
    """One summary row per (axis, value, model, mode) with ``vs_cloud`` / ``vs_ft`` (means over ``seeds``, two-level
    CIs): :func:`~stream_ctr.evaluate.seeds.summarise` rows plus ``axis`` and ``value``."""
    spec = FeatureSpec.parse(FEATURES, buckets)
    done: dict[tuple, list[dict]] = {}
    rows = []
    for axis, values in axes.items():
        for value in values:
            key = _key(axis, value)
            if key not in done:
                ms = run_seeds(
                    partial(_world_events, axis, value, spec),
                    cfg,
                    seeds,
                    dataset=f"synthetic {axis}={value}",
                )
                done[key] = ms.rows
                if on_world is not None:
                    on_world(axis, value, ms)
            rows += [{"axis": axis, "value": value, **r} for r in done[key]]
    return rows


def regimes_table(rows: list[dict]) -> str:
    """Markdown: one line per (axis, value, model): ``ft - cloud`` and every correction mode minus ``ft``."""
    modes = list(dict.fromkeys(r["mode"] for r in rows if r["mode"] not in ("cloud", "ft", "ft_auto")))
    lines = [
        "| axis | value | model | ft − cloud | " + " | ".join(f"{m} − ft" for m in modes) + " | auto's picks |",
        "|" + "|".join(["---"] * (5 + len(modes))) + "|",
    ]
    by = {(r["axis"], r["value"], r["model"], r["mode"]): r for r in rows}
    for axis, value, model in dict.fromkeys((r["axis"], r["value"], r["model"]) for r in rows):
        ft = by.get((axis, value, model, "ft"), {})
        auto = by.get((axis, value, model, "ft_auto"), {})
        cells = [delta_cell(by.get((axis, value, model, m), {}).get("vs_ft")) for m in modes]
        lines.append(
            f"| {axis} | {value:g} | {model} | {delta_cell(ft.get('vs_cloud'))} | "
            + " | ".join(cells)
            + f" | {', '.join(auto.get('picks', []))} |"
        )
    return "\n".join(lines)


def plot_regimes(path: Path, rows: list[dict], correction: str = "ft_lc") -> Path:
    """One panel per axis: ``ft - cloud`` and ``correction - ft`` (means over seeds, 95% CI bars) per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_names = list(dict.fromkeys(r["axis"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axs = plt.subplots(1, len(axes_names), figsize=(3.6 * len(axes_names), 3.4), squeeze=False, sharey=True)
    styles = {"ft − cloud": ("ft", "vs_cloud", "-o"), f"{correction} − ft": (correction, "vs_ft", "--s")}
    for ax, axis in zip(axs[0], axes_names):
        for k, model in enumerate(models):
            for label, (mode, key, style) in styles.items():
                pts = [
                    (r["value"], r[key])
                    for r in rows
                    if (r["axis"], r["model"], r["mode"]) == (axis, model, mode) and key in r
                ]
                if not pts:
                    continue
                x = [p[0] + 0.02 * k * (max(v for v, _ in pts) or 1) for p in pts]
                y = [p[1]["delta"] for p in pts]
                err = [[d - p[1]["ci"][0] for d, p in zip(y, pts)], [p[1]["ci"][1] - d for d, p in zip(y, pts)]]
                ax.errorbar(x, y, yerr=err, fmt=style, ms=4, capsize=2, color=f"C{k}", label=f"{model}: {label}")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel(axis)
    axs[0][0].set_ylabel("gAUC difference (95% CI)")
    axs[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
