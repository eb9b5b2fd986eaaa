"""The regime map (stream_ctr.evaluate.regimes): worlds per axis, the base run once, table and plot written."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

import stream_ctr.evaluate.regimes as regimes
from stream_ctr.data import generate_synthetic
from stream_ctr.evaluate.experiment import EvalConfig

from .test_experiment import FAST


def test_axes_change_one_thing_each_and_the_ramp_raises_the_click_rate():
    base = regimes.world("drift", regimes.BASE.drift, seed=2)
    assert base == replace(regimes.BASE, seed=2)
    assert regimes.world("taste", 5.0, 2) == replace(base, taste=5.0)
    ramp = generate_synthetic(replace(regimes.world("ramp", 2.0, 2), users=60))
    flat = generate_synthetic(replace(base, users=60))
    late = lambda d: np.mean([e.label for e in d.events[-len(d.events) // 5 :]])  # noqa: E731
    assert late(ramp) > late(flat) + 0.1


def test_run_regimes_runs_the_base_once_and_writes_a_row_per_world_model_and_mode(tmp_path, monkeypatch):
    monkeypatch.setattr(regimes, "BASE", replace(regimes.BASE, users=40, items=60, events_per_user=30))
    cfg = EvalConfig(models=("lr",), modes=("cloud", "ft", "ft_lc", "ft_auto"), **FAST)
    seen = []
    rows = regimes.run_regimes(
        cfg,
        [0, 1],
        axes={"drift": (0.0, 2.0), "taste": (3.0,)},
        on_world=lambda a, v, ms: seen.append((a, v, len(ms.results))),
    )
    assert seen == [("drift", 0.0, 2), ("drift", 2.0, 2)]  # taste=3.0 is the base world, already run
    assert {(r["axis"], r["value"], r["mode"]) for r in rows} == {
        (a, v, m) for a, v in (("drift", 0.0), ("drift", 2.0), ("taste", 3.0)) for m in cfg.modes
    }
    base = [r for r in rows if r["value"] in (2.0, 3.0) and r["mode"] == "ft_lc"]
    assert base[0]["vs_ft"] == base[1]["vs_ft"]
    table = regimes.regimes_table(rows)
    assert "| drift | 0 | lr |" in table and "ft_lc − ft" in table
    assert regimes.plot_regimes(tmp_path / "r.png", rows).stat().st_size > 1000
